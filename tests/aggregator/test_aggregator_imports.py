import subprocess
import sys


def test_aggregator_needs_neither_torch_nor_seal() -> None:
    """The aggregator adds ciphertexts with numpy: it loads no ML framework and no SEAL (hence no key)."""
    code = (
        "import sys; import fedgpu.aggregator.server, fedgpu.cli.main; fedgpu.cli.main.build_parser(); "
        "import fedgpu.crypto as c; c.adder('none', (1000).to_bytes(8, 'little')); "
        "bad = [m for m in ('torch', 'tenseal', 'opacus') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
