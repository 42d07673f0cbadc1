"""README.md stays true: CI runs its test command, and its library example runs as printed."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", README, re.S)]


def test_readme_opens_with_install_quickstart_and_test_commands():
    """The first two commands install and run the quickstart, then install and run the tests."""
    first, second = bash_blocks()[:2]
    assert "pip install -e ." in first and first.endswith("sae run pipelines/quickstart.toml")
    assert 'pip install -e ".[dev]"' in second and second.endswith("pytest -q")


def test_ci_runs_exactly_the_readme_test_command():
    """.ci/run contains the README's test command verbatim, as one line."""
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert bash_blocks()[1] in ci_lines


def test_library_example_runs_as_printed_and_reaches_95_percent():
    """The README's Library snippet runs unchanged and prints a test accuracy of at least 0.95."""
    code = re.search(r"## Library\n.*?```python\n(.*?)```", README, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15
    env = dict(os.environ, OMP_NUM_THREADS="1")    # tiny network: one thread is fastest
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", done.stdout).group(1))
    assert accuracy >= 0.95, done.stdout


def test_every_name_the_library_section_lists_is_importable_from_stacked_ae():
    """Each bullet of the Library section opens with names a user imports as `from stacked_ae import name`."""
    import stacked_ae
    section = re.search(r"## Library\n(.*?)\n## ", README, re.S).group(1)
    names = set()
    for bullet in re.findall(r"^- (`.*?)`:", section, re.M):                # a bullet's head, up to its colon
        names |= set(re.findall(r"`(\w+)", bullet)) | set(re.findall(r"\b([A-Z]\w+)\(", bullet))
    assert {"AutoencoderLayer", "greedy_pretrain", "StackedEncoder", "fit_classifier", "fit_autoencoder",
            "ConvAutoencoderLayer", "ConvSpec", "PretrainConfig"} <= names
    missing = sorted(name for name in names if not hasattr(stacked_ae, name))
    assert not missing, f"README's Library section names {missing}, which `import stacked_ae` does not export"
