"""The playbooks parse (ansible-playbook --syntax-check), and the example inventory has the
groups the site playbook targets. Fast enough for the normal suite: no host is contacted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "playbooks"
EXAMPLE = PLAYBOOKS / "inventory" / "example.yml"
BIN = Path(sys.executable).parent  # ansible-playbook lives next to this interpreter


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=PLAYBOOKS,  # picks up playbooks/ansible.cfg, as `jobrunner deploy` does
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_site_playbook_passes_syntax_check() -> None:
    done = run("ansible-playbook", "--syntax-check", "-i", str(EXAMPLE), "site.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_example_inventory_has_the_site_groups() -> None:
    done = run("ansible-inventory", "-i", str(EXAMPLE), "--list")
    assert done.returncode == 0, done.stderr
    groups = json.loads(done.stdout)
    for group in ("broker", "workers", "monitor"):
        assert groups[group]["hosts"], group
