"""The versions every metrics file records: read from the distributions, the same strings as the modules'."""
import subprocess
import sys


def test_versions_are_the_modules_own_strings_without_importing_monai_or_smp():
    code = ("import sys\nfrom micropatch.core.provenance import versions\nv = versions()\n"
            "print(sorted(m for m in ('monai', 'segmentation_models_pytorch') if m in sys.modules))\n"
            "import monai, numpy, PIL, segmentation_models_pytorch as smp\n"
            "print(v['monai'] == monai.__version__, v['segmentation_models_pytorch'] == smp.__version__, "
            "v['numpy'] == numpy.__version__, v['pillow'] == PIL.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"  # neither imported: seconds of every score and audit stage
    assert out[1] == "True True True True"
