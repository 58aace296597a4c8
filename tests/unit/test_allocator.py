import subprocess
import sys


def test_mallopt_settings_apply_on_glibc() -> None:
    # in a child: the settings are process-wide and must not leak into the test process
    code = "from elsewhere import allocator; print(allocator.tune())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"  # Debian's C library is glibc
