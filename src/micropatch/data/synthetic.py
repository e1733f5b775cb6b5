"""Synthetic fundus photographs with exact lesion masks, written in a real dataset's native layout.

The embedded default of the pipeline: deterministic from a seed, small enough for a CPU, and shaped like
the real thing (circular field of view, illumination falloff, vessel tree, optic disc, texture, sensor noise)
so that the real adapters, preprocessing and model all run on it unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from micropatch.core.fileio import atomic_path

LESIONS = ("MA", "HE", "EX", "SE")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to draw: image size in px and lesion counts per image (ranges are inclusive)."""

    width: int = 1024
    height: int = 680
    ma_per_image: tuple[int, int] = (12, 30)
    ma_diameter_px: tuple[int, int] = (3, 12)
    he_per_image: tuple[int, int] = (0, 3)
    ex_per_image: tuple[int, int] = (0, 4)
    se_probability: float = 0.4
    jpeg_quality: int = 92
    # How the masks are drawn from the same photograph (the second study's labelling styles): fine, every lesion
    # exactly (IDRiD, MAPLES-DR, DDR); coarse, one ellipse or convex polygon around each cluster of nearby lesions
    # (Retinal-Lesions); mixed, each lesion type of each image fine or coarse at random (FGADR)
    label_style: str = "fine"


LABEL_STYLES = ("fine", "coarse", "mixed")
# Lesions of one type closer than this share of the image height are one cluster in a coarse label
CLUSTER_SHARE = 0.12


def _coarse(mask: np.ndarray, reach: float, ellipse: bool) -> np.ndarray:
    """bool (H, W): one filled shape around each cluster of a mask's components (centroids closer than `reach`
    px, chained): an ellipse fitted to the cluster's pixels or their convex hull, grown by a few px, as annotators
    outline a group of lesions."""
    count, labels, _, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    group = list(range(count))

    def root(i):
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i in range(1, count):
        for j in range(i + 1, count):
            if np.hypot(*(centroids[i] - centroids[j])) < reach:
                group[root(i)] = root(j)
    out = np.zeros(mask.shape, np.uint8)
    for cluster in sorted({root(i) for i in range(1, count)}):
        members = [i for i in range(1, count) if root(i) == cluster]
        points = np.argwhere(np.isin(labels, members))[:, ::-1].astype(np.int32)  # (x, y)
        if ellipse and len(points) >= 5:
            (cx, cy), (w, h), angle = cv2.fitEllipse(points)
            cv2.ellipse(out, ((cx, cy), (w + 8, h + 8), angle), 1, -1)
        else:
            hull = np.zeros_like(out)
            cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
            out |= cv2.dilate(hull, np.ones((9, 9), np.uint8))
    return out.astype(bool) | mask


def _labels(masks: dict[str, np.ndarray], style: str, rng: np.random.Generator, fov: np.ndarray) -> dict:
    """The masks an annotator in `style` would draw for these exact lesions (fine: unchanged)."""
    if style not in LABEL_STYLES:
        raise ValueError(f"synthetic label_style '{style}': choose one of {LABEL_STYLES}")
    if style == "fine":
        return masks  # no draw from rng: fine sets keep their bytes
    reach = CLUSTER_SHARE * fov.shape[0]
    out = {}
    for k, (lesion, mask) in enumerate(masks.items()):
        coarse = style == "coarse" or rng.uniform() < 0.5
        out[lesion] = _coarse(mask, reach, ellipse=k % 2 == 0) & fov if coarse and mask.any() else mask
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], float32 (H, W): a cells x cells random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(grid, shape[::-1], interpolation=cv2.INTER_CUBIC), -1, 1)


def _vessel_tree(rng: np.random.Generator, shape, origin, fov_radius: float) -> np.ndarray:
    """Vessel darkness in [0, 1], float32 (H, W): random branching polylines from the optic disc."""
    canvas = np.zeros(shape, np.float32)
    stack = []
    for angle in rng.uniform(0, 2 * np.pi) + np.arange(5) * 2 * np.pi / 5 + rng.normal(0, 0.2, 5):
        stack.append((np.array(origin, float), angle, max(2.0, fov_radius / 55), 0))
    while stack:
        point, angle, width, depth = stack.pop()
        length = fov_radius * rng.uniform(0.25, 0.45) / (1 + 0.4 * depth)
        points = [point.copy()]
        for _ in range(12):
            angle += rng.normal(0, 0.18)
            point = point + (length / 12) * np.array([np.cos(angle), np.sin(angle)])
            points.append(point.copy())
        cv2.polylines(canvas, [np.round(np.array(points)).astype(np.int32)], False, 0.55 + 0.1 * width / 6,
                      thickness=max(1, int(round(width))), lineType=cv2.LINE_AA)
        if depth < 4 and width > 1.2:
            for turn in (-1, 1):
                stack.append((point, angle + turn * rng.uniform(0.3, 0.8), width * 0.72, depth + 1))
    return cv2.GaussianBlur(canvas, (0, 0), 0.8)


def _random_points_in_disc(rng, n, center, radius, avoid_center, avoid_radius):
    """n (x, y) float points uniformly inside a disc, away from a second disc (the optic disc)."""
    points = []
    while len(points) < n:
        r = radius * np.sqrt(rng.uniform(0, 1))
        t = rng.uniform(0, 2 * np.pi)
        p = (center[0] + r * np.cos(t), center[1] + r * np.sin(t))
        if np.hypot(p[0] - avoid_center[0], p[1] - avoid_center[1]) > avoid_radius:
            points.append(p)
    return points


def _blob(rng, mask: np.ndarray, center, radius: float, irregular: bool) -> None:
    """Draw one filled lesion into a bool (H, W) mask in place: a disc or an irregular cluster of ellipses."""
    canvas = mask.view(np.uint8)
    x, y = center
    if not irregular:
        cv2.circle(canvas, (int(round(x)), int(round(y))), max(1, int(round(radius))), 1, -1, cv2.LINE_8)
        return
    for _ in range(rng.integers(2, 6)):
        dx, dy = rng.normal(0, radius * 0.5, 2)
        axes = (max(1, int(radius * rng.uniform(0.4, 1.0))), max(1, int(radius * rng.uniform(0.3, 0.8))))
        cv2.ellipse(canvas, (int(x + dx), int(y + dy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)


def synth_fundus(seed: int, spec: SyntheticSpec = SyntheticSpec()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One synthetic fundus: uint8 RGB (H, W, 3) and {lesion: bool (H, W)} masks in spec.label_style,
    deterministic from seed; the photograph does not depend on the label style."""
    rng = np.random.default_rng(seed)
    h, w = spec.height, spec.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    center = (w / 2 + rng.uniform(-0.02, 0.02) * w, h / 2)
    fov_radius = 0.53 * h  # cut at top and bottom, as IDRiD's 4288x2848 frames are
    radius_map = np.hypot(xx - center[0], yy - center[1]) / fov_radius
    fov = radius_map <= 1.0

    side = rng.choice([-1, 1])
    disc_center = (center[0] + side * 0.45 * fov_radius, center[1] + rng.uniform(-0.05, 0.05) * h)
    disc_radius = 0.09 * fov_radius

    falloff = np.clip(1.0 - 0.55 * radius_map**2.2, 0.25, 1.0)
    texture = 1.0 + 0.06 * _smooth_noise(rng, (h, w), 12) + 0.03 * _smooth_noise(rng, (h, w), 48)
    base = np.array([rng.uniform(175, 215), rng.uniform(80, 105), rng.uniform(30, 50)], np.float32)
    rgb = base[None, None, :] * (falloff * texture)[..., None]

    disc = np.exp(-(np.hypot(xx - disc_center[0], yy - disc_center[1]) / disc_radius) ** 4)
    rgb += disc[..., None] * np.array([50, 110, 70], np.float32)

    vessels = _vessel_tree(rng, (h, w), disc_center, fov_radius)
    rgb *= (1.0 - vessels[..., None] * np.array([0.35, 0.6, 0.55], np.float32))

    masks = {name: np.zeros((h, w), bool) for name in LESIONS}
    n_ma = int(rng.integers(spec.ma_per_image[0], spec.ma_per_image[1] + 1))
    vessel_pixels = np.argwhere((vessels > 0.3) & (radius_map < 0.85))
    candidates = _random_points_in_disc(rng, n_ma, center, 0.88 * fov_radius, disc_center, 2 * disc_radius)
    for i, (x, y) in enumerate(candidates):
        if i % 3 == 0 and len(vessel_pixels):  # a third sit beside a vessel, where they are hardest to see
            vy, vx = vessel_pixels[rng.integers(len(vessel_pixels))]
            offset = rng.uniform(6, 12) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
            x, y = vx + offset[0], vy + offset[1]
        diameter = rng.uniform(*spec.ma_diameter_px)
        _blob(rng, masks["MA"], (x, y), diameter / 2, irregular=False)

    n_he = int(rng.integers(spec.he_per_image[0], spec.he_per_image[1] + 1))
    for x, y in _random_points_in_disc(rng, n_he, center, 0.8 * fov_radius, disc_center, 2 * disc_radius):
        _blob(rng, masks["HE"], (x, y), rng.uniform(10, 22), irregular=True)
    n_ex = int(rng.integers(spec.ex_per_image[0], spec.ex_per_image[1] + 1))
    for x, y in _random_points_in_disc(rng, n_ex, center, 0.7 * fov_radius, disc_center, 2 * disc_radius):
        _blob(rng, masks["EX"], (x, y), rng.uniform(4, 12), irregular=True)
    if rng.uniform() < spec.se_probability:
        (x, y), = _random_points_in_disc(rng, 1, center, 0.6 * fov_radius, disc_center, 2 * disc_radius)
        _blob(rng, masks["SE"], (x, y), rng.uniform(14, 24), irregular=True)
    for name in LESIONS:
        masks[name] &= fov
    masks["MA"] &= ~masks["HE"]  # one label per pixel where lesions overlap; MAs stay the small dots

    depth = rng.uniform(0.45, 0.65)
    rgb[masks["MA"]] *= np.array([0.75, 1 - depth, 1 - depth * 0.8], np.float32)
    rgb[masks["HE"]] *= np.array([0.6, 0.35, 0.4], np.float32)
    rgb[masks["EX"]] = rgb[masks["EX"]] * 0.3 + np.array([235, 215, 110], np.float32) * 0.7
    soft = cv2.GaussianBlur(masks["SE"].astype(np.float32), (0, 0), 4)
    rgb += soft[..., None] * np.array([40, 60, 50], np.float32)

    rgb = cv2.GaussianBlur(rgb, (0, 0), 0.7)  # camera optics: edges of every structure are soft
    rgb += rng.normal(0, 2.5, rgb.shape).astype(np.float32)  # sensor noise
    rgb[~fov] = rng.uniform(0, 4, (int((~fov).sum()), 3))  # dark border with a little noise, as JPEGs have
    return np.clip(rgb, 0, 255).astype(np.uint8), _labels(masks, spec.label_style, rng, fov)


def _save_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality)


def _save_mask_tif(path: Path, mask: np.ndarray) -> None:
    """1-bit TIFF with deflate compression, as the re-saved IDRiD masks are."""
    with atomic_path(path) as tmp:
        Image.fromarray(mask).convert("1").save(tmp, format="TIFF", compression="tiff_adobe_deflate")


IDRID_LESION_FOLDERS = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates",
                        "SE": "4. Soft Exudates"}


# The label-value sets of the official e-ophtha MA annotations (of 148 PNGs: 89 {0,200,255}, 53 {0,255},
# 5 {0,200}, 1 with stray levels {0,200,239,247,255}); the synthetic set cycles through all four.
EOPHTHA_MASK_STYLES = ("outlined", "filled", "outline_only", "stray_levels")
EOPHTHA_STRAY_LEVELS = (239, 247)


def _save_mask_png(path: Path, mask: np.ndarray, style: str = "outlined") -> None:
    """e-ophtha style annotation, 8-bit PNG: 255 inside each MA, 200 on its outline, as the release has them.

    style: `outlined` {0,200,255}; `filled` {0,255}; `outline_only` {0,200}; `stray_levels` adds 2 pixels each of
    239 and 247 inside lesions, as one official file (E0008389/C0000887.png) has.
    """
    outline = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    values = np.where(mask, 255, 0).astype(np.uint8)
    if style in ("outlined", "stray_levels"):
        values[outline] = 200
    elif style == "outline_only":
        values[mask] = 200
    if style == "stray_levels":
        inside = np.argwhere(values == 255)
        for k, (y, x) in enumerate(inside[np.linspace(0, len(inside) - 1, 4).astype(int)] if len(inside) else []):
            values[y, x] = EOPHTHA_STRAY_LEVELS[k % 2]
    with atomic_path(path) as tmp:
        Image.fromarray(values).save(tmp, format="PNG")


def _lesion_free(spec: SyntheticSpec) -> SyntheticSpec:
    return replace(spec, ma_per_image=(0, 0), he_per_image=(0, 0), ex_per_image=(0, 0), se_probability=0.0)


def write_idrid_layout(root: Path, n_images: int, seed: int, spec: SyntheticSpec = SyntheticSpec(),
                       first_id: int = 1, split_folder: str = "a. Training Set") -> list[str]:
    """Write n synthetic images in the official IDRiD layout under root; return the image ids."""
    seg = Path(root) / "A. Segmentation"
    ids = []
    for index in tqdm(range(n_images), desc="synthetic IDRiD", unit="img", leave=False):
        image_id = f"IDRiD_{first_id + index:02d}"
        rgb, masks = synth_fundus(seed * 100_003 + index, spec)
        _save_jpeg(seg / "1. Original Images" / split_folder / f"{image_id}.jpg", rgb, spec.jpeg_quality)
        for lesion, folder in IDRID_LESION_FOLDERS.items():
            # IDRiD ships MA and EX masks for every image, HE and SE only where the lesion is present
            if lesion in ("MA", "EX") or masks[lesion].any():
                path = seg / "2. All Segmentation Groundtruths" / split_folder / folder / f"{image_id}_{lesion}.tif"
                _save_mask_tif(path, masks[lesion])
        ids.append(image_id)
    return ids


DDR_SPLITS = {"train": "label", "valid": "segmentation label", "test": "label"}


def write_ddr_layout(root: Path, n_images: int, seed: int, spec: SyntheticSpec = SyntheticSpec()) -> list[str]:
    """Write n images in DDR's layout (DDR-dataset/lesion_segmentation/...) under root; return the image ids.

    Images go round-robin to train, valid and test; sizes alternate (DDR mixes cameras); every 4th image is
    lesion-free, so its four label TIFFs are all zero, as some official DDR labels are.
    """
    seg = Path(root) / "DDR-dataset" / "lesion_segmentation"
    ids = []
    for index in tqdm(range(n_images), desc="synthetic DDR", unit="img", leave=False):
        split = list(DDR_SPLITS)[index % 3]
        image_id = f"{7 + index:03d}-{1789 + 31 * index}-{100 + index}"
        sized = replace(spec, width=spec.width if index % 2 == 0 else spec.width * 3 // 4,
                        height=spec.height if index % 2 == 0 else spec.height * 3 // 4)
        rgb, masks = synth_fundus(seed * 100_003 + index, _lesion_free(sized) if index % 4 == 3 else sized)
        _save_jpeg(seg / split / "image" / f"{image_id}.jpg", rgb, spec.jpeg_quality)
        for lesion in LESIONS:
            with atomic_path(seg / split / DDR_SPLITS[split] / lesion / f"{image_id}.tif") as tmp:
                # deflate keeps the shipped default small (data/store); the adapter reads any TIFF compression
                Image.fromarray(masks[lesion].astype(np.uint8) * 255).save(tmp, format="TIFF",
                                                                           compression="tiff_adobe_deflate")
        ids.append(image_id)
    return ids


def write_eophtha_layout(root: Path, n_images: int, seed: int, spec: SyntheticSpec = SyntheticSpec()) -> list[str]:
    """Write n images in e-ophtha MA's layout (e_optha_MA/{MA,Annotation_MA,healthy}/<patient>/) under root.

    Three images per patient folder; every third patient is healthy (no annotation files); extensions alternate
    between .jpg and .JPG, a stray Thumbs.db sits in the first patient folder, and the annotations cycle through
    the release's four label-value sets (EOPHTHA_MASK_STYLES), as in the official release.
    """
    top = Path(root) / "e_optha_MA"
    ids, annotated = [], set()
    for index in tqdm(range(n_images), desc="synthetic e-ophtha", unit="img", leave=False):
        patient_index = index // 3
        patient = f"E{404 + patient_index:07d}"
        healthy = patient_index % 3 == 2
        image_id = f"C{7104 + index:07d}"
        rgb, masks = synth_fundus(seed * 100_003 + index, _lesion_free(spec) if healthy else spec)
        suffix = ".JPG" if index % 2 else ".jpg"
        _save_jpeg(top / ("healthy" if healthy else "MA") / patient / f"{image_id}{suffix}", rgb, spec.jpeg_quality)
        if not healthy:
            style = EOPHTHA_MASK_STYLES[len(annotated) % len(EOPHTHA_MASK_STYLES)]
            _save_mask_png(top / "Annotation_MA" / patient / f"{image_id}.png", masks["MA"], style)
            annotated.add(image_id)
        ids.append(image_id)
    (top / "MA" / f"E{404:07d}" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 thumbnail cache")
    return ids


def _square(spec: SyntheticSpec) -> SyntheticSpec:
    side = min(spec.width, spec.height)
    return replace(spec, width=side, height=side)


def _save_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


FGADR_LESION_FOLDERS = {"MA": "Microaneurysms_Masks", "HE": "Hemohedge_Masks", "EX": "HardExudate_Masks",
                        "SE": "SoftExudate_Masks"}


def write_fgadr_layout(root: Path, n_images: int, seed: int, spec: SyntheticSpec = SyntheticSpec()) -> list[str]:
    """Write n square images in FGADR's Seg-set layout under root; return the image ids.

    As the loaders describe the release: PNG photographs named NNNN_k.png; a mask file per image in each of the
    four lesion folders (sic "Hemohedge"), all-zero where absent, 8-bit with anti-aliased edges, every other one
    saved as RGB with equal channels; IRMA and neovascularisation masks only for a few images; the grading CSV
    without a header.
    """
    top = Path(root) / "Seg-set"
    ids, grades = [], []
    for index in tqdm(range(n_images), desc="synthetic FGADR", unit="img", leave=False):
        image_id = f"{index + 1:04d}_{1 + index % 3}"
        rgb, masks = synth_fundus(seed * 100_003 + index, _square(spec))
        _save_png(top / "Original_Images" / f"{image_id}.png", rgb)
        for lesion, folder in FGADR_LESION_FOLDERS.items():
            # anti-aliased edges: the drawn shape blurred, so its rim holds 1..254 and >= 128 is the shape
            soft = cv2.GaussianBlur(masks[lesion].astype(np.float32) * 255, (0, 0), 0.8)
            values = np.clip(np.round(soft), 0, 255).astype(np.uint8)
            _save_png(top / folder / f"{image_id}.png", np.dstack([values] * 3) if index % 2 else values)
        if index % 3 == 0:  # IRMA / NV masks exist only for images that have them
            _save_png(top / "IRMA_Masks" / f"{image_id}.png", np.zeros(rgb.shape[:2], np.uint8))
        if index % 5 == 0:
            _save_png(top / "Neovascularization_Masks" / f"{image_id}.png", np.zeros(rgb.shape[:2], np.uint8))
        grades.append(f"{image_id}.png,{index % 5}\n")
        ids.append(image_id)
    with atomic_path(top / "DR_Seg_Grading_Label.csv") as tmp:
        tmp.write_text("".join(grades))
    return ids


MAPLES_BIOMARKERS = ("Microaneurysms", "Hemorrhages", "Exudates", "CottonWoolSpots", "Drusens", "Neovascularization",
                     "BrightUncertains", "RedUncertains", "Vessels", "OpticDisc", "OpticCup", "Macula")
MAPLES_LESIONS = {"MA": "Microaneurysms", "HE": "Hemorrhages", "EX": "Exudates", "SE": "CottonWoolSpots"}


def write_maples_dr_layout(root: Path, n_images: int, seed: int,
                           spec: SyntheticSpec = SyntheticSpec()) -> list[str]:
    """Write n images as MAPLES-DR's labels archive (no top folder: {train,test}/diagnosis.csv and one 1-bit PNG
    per biomarker folder) plus the MESSIDOR photographs it matches by stem, as .tif in MESSIDOR/Base11 ...
    (the release ships no photographs; micropatch's own layout keeps them beside the labels). Macula and OpticCup
    miss a file for every 4th image, as in the release. Returns the stems."""
    root = Path(root)
    ids, diagnosis = [], {"train": ["name,DR,ME\n"], "test": ["name,DR,ME\n"]}
    for index in tqdm(range(n_images), desc="synthetic MAPLES-DR", unit="img", leave=False):
        split = "test" if index % 3 == 2 else "train"
        stem = f"2005{1019 + index:04d}_{38557 + 7 * index}_0100_PP"
        rgb, masks = synth_fundus(seed * 100_003 + index, spec)
        with atomic_path(root / "MESSIDOR" / f"Base{11 + index % 3}" / f"{stem}.tif") as tmp:
            Image.fromarray(rgb).save(tmp, format="TIFF")
        for biomarker in MAPLES_BIOMARKERS:
            if biomarker in ("Macula", "OpticCup") and index % 4 == 3:
                continue
            lesion = next((k for k, v in MAPLES_LESIONS.items() if v == biomarker), None)
            mask = masks[lesion] if lesion else np.zeros(rgb.shape[:2], bool)
            with atomic_path(root / split / biomarker / f"{stem}.png") as tmp:
                Image.fromarray(mask).convert("1").save(tmp, format="PNG")
        diagnosis[split].append(f"{stem},{index % 5},{index % 3}\n")
        ids.append(stem)
    for split, rows in diagnosis.items():
        with atomic_path(root / split / "diagnosis.csv") as tmp:
            tmp.write_text("".join(rows))
    return ids


RETINAL_LESIONS_FILES = {"MA": "microaneurysm", "HE": "retinal_hemorrhage", "EX": "hard_exudate",
                         "SE": "cotton_wool_spots"}


def write_retinal_lesions_layout(root: Path, n_images: int, seed: int,
                                 spec: SyntheticSpec = SyntheticSpec()) -> list[str]:
    """Write n square images in Retinal-Lesions' layout (retinal-lesions-v20191227/...) under root; return the ids.

    Images come in eye pairs (<kaggleID>_left / _right share a patient); a lesion's PNG exists only where it is
    present, 255 = lesion and 127 = a lesion the authors excluded (every 3rd component); every 4th image is
    lesion-free and has no mask folder at all; dr_grades.csv lists the grades.
    """
    top = Path(root) / "retinal-lesions-v20191227"
    ids, grades = [], ["image id,kaggle label,our label\n"]
    for index in tqdm(range(n_images), desc="synthetic Retinal-Lesions", unit="img", leave=False):
        image_id = f"{10003 + 17 * (index // 2)}_{('left', 'right')[index % 2]}"
        lesion_free = index % 4 == 3
        rgb, masks = synth_fundus(seed * 100_003 + index, _lesion_free(_square(spec)) if lesion_free
                                  else _square(spec))
        _save_jpeg(top / "images_896x896" / f"{image_id}.jpg", rgb, spec.jpeg_quality)
        for lesion, stem in RETINAL_LESIONS_FILES.items():
            if not masks[lesion].any():
                continue
            count, labels = cv2.connectedComponents(masks[lesion].astype(np.uint8), connectivity=8)
            values = np.where(masks[lesion], 255, 0).astype(np.uint8)
            values[np.isin(labels, np.arange(3, count, 3))] = 127
            _save_png(top / "lesion_segs_896x896" / image_id / f"{stem}.png", values)
        grades.append(f"{image_id},{index % 5},{index % 5}\n")
        ids.append(image_id)
    with atomic_path(top / "dr_grades.csv") as tmp:
        tmp.write_text("".join(grades))
    return ids


LAYOUT_WRITERS = {"idrid": write_idrid_layout, "ddr": write_ddr_layout, "eophtha": write_eophtha_layout,
                  "fgadr": write_fgadr_layout, "maples_dr": write_maples_dr_layout,
                  "retinal_lesions": write_retinal_lesions_layout}
