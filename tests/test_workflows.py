"""The GitHub Actions workflows: a two-phase pre-merge gate (gate-build.yml measures a pull request with no
privileges, gate-judge.yml judges the measurements with the default branch's code and posts the verdict).

Checked with zizmor (security audit) and check-jsonschema (the GitHub workflow schema), both from the `dev`
extra, plus the structural properties that make the judge safe to run on a fork's artifact. The self-tests
show that each tool does fail on a bad workflow, so a pass here means something."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
BUILD = WORKFLOWS / "gate-build.yml"
JUDGE = WORKFLOWS / "gate-judge.yml"
BUNDLE = "gate-bundle"
APPROVAL_LABEL = "gate-budget-change-approved"


def _tool(name: str) -> str:
    """The tool installed beside the running interpreter (the venv's bin), or fail saying how to install it."""
    folders = dict.fromkeys([sysconfig.get_path("scripts"), str(Path(sys.executable).parent)])
    for folder in folders:
        found = shutil.which(name, path=folder)
        if found:
            return found
    pytest.fail(f"{name} is not installed beside {sys.executable} (looked in {', '.join(folders)}); "
                f'install the dev tools: pip install -e ".[dev]"', pytrace=False)


def _run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True, timeout=120)


def _zizmor(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # --offline: no GitHub API (the online audits need a token); --color never: readable failure messages.
    return _run(_tool("zizmor"), "--offline", "--color", "never", *args)


def _schema(*paths: Path) -> subprocess.CompletedProcess[str]:
    return _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *paths)


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def _load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def _steps(workflow: dict):
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def _uses(step: dict, action: str) -> bool:
    return step.get("uses", "").split("@")[0] == action


# ---------------------------------------------------------------------------------------------------------
# The repository's workflows pass both tools.

def test_the_gate_pair_replaces_the_single_gate_workflow():
    names = {p.name for p in WORKFLOWS.glob("*.y*ml")}
    assert {"gate-build.yml", "gate-judge.yml"} <= names and "gate.yml" not in names, names


def test_a_missing_tool_fails_with_the_install_line(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(pytest.fail.Exception, match=r'pip install -e "\.\[dev\]"'):
        _tool("zizmor")


def test_zizmor_reports_no_findings():
    proc = _zizmor(WORKFLOWS)
    assert proc.returncode == 0, f"zizmor has findings on {WORKFLOWS}:\n{_output(proc)}"
    assert "No findings to report" in proc.stdout, _output(proc)


def test_zizmor_ignores_only_the_judge_trigger():
    """The one finding ignored inline is dangerous-triggers on the judge's workflow_run, by design (the judge
    runs only the default branch's code). Any other ignore comment must be argued for here first."""
    proc = _zizmor("--no-ignores", "--format", "json", WORKFLOWS)
    findings = json.loads(proc.stdout)
    where = [(f["ident"], Path(f["locations"][0]["symbolic"]["key"]["Local"]["verbatim_path"]).name)
             for f in findings]
    assert where == [("dangerous-triggers", "gate-judge.yml")], _output(proc)
    ignores = [(p.name, line) for p in WORKFLOWS.glob("*.yml") for line in p.read_text().splitlines()
               if "zizmor: ignore" in line]
    assert ignores == [("gate-judge.yml", "  workflow_run: # zizmor: ignore[dangerous-triggers]")], ignores


def test_workflows_match_the_github_workflow_schema():
    proc = _schema(*sorted(WORKFLOWS.glob("*.yml")))
    assert proc.returncode == 0, f"check-jsonschema rejects the workflows:\n{_output(proc)}"


# ---------------------------------------------------------------------------------------------------------
# Self-tests: the same checks fail on bad workflows.

PWN_REQUEST = """\
name: pwn request
on:
  pull_request_target:
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          ref: ${{ github.event.pull_request.head.sha }}
      - run: echo "${{ github.event.pull_request.title }}"
"""


def test_zizmor_flags_a_pwn_request(tmp_path: Path):
    bad = tmp_path / "pwn.yml"
    bad.write_text(PWN_REQUEST)
    proc = _zizmor("--format", "json", bad)
    assert proc.returncode >= 11, f"zizmor passed a pwn-request workflow:\n{_output(proc)}"
    found = {f["ident"] for f in json.loads(proc.stdout)}
    assert {"dangerous-triggers", "template-injection", "unpinned-uses", "artipacked",
            "excessive-permissions"} <= found, found


def test_zizmor_flags_an_unpinned_action_in_an_otherwise_clean_workflow(tmp_path: Path):
    """The judge workflow with one `uses:` moved back from a commit SHA to a tag."""
    text = JUDGE.read_text()
    pinned = re.search(r"actions/checkout@[0-9a-f]{40} # v[\d.]+", text)
    assert pinned, "the judge does not pin actions/checkout"
    bad = tmp_path / "gate-judge.yml"
    bad.write_text(text.replace(pinned.group(0), "actions/checkout@v4", 1))
    proc = _zizmor("--format", "json", bad)
    found = [f["ident"] for f in json.loads(proc.stdout)]
    assert found == ["unpinned-uses"], _output(proc)


def test_check_jsonschema_rejects_an_invalid_workflow(tmp_path: Path):
    bad = tmp_path / "invalid.yml"
    bad.write_text("name: invalid\non: pull_request\njobs:\n  build:\n    runs_on: ubuntu-latest\n"
                   "    steps:\n      - run: echo hi\n")
    proc = _schema(bad)
    assert proc.returncode != 0, f"check-jsonschema accepted a job without runs-on:\n{_output(proc)}"
    assert "'runs-on' is a required property" in proc.stdout, _output(proc)


# ---------------------------------------------------------------------------------------------------------
# Structure: what makes the pair safe, beyond what the tools check.

USES_PINNED = re.compile(r"^\s*(?:- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


@pytest.mark.parametrize("path", [BUILD, JUDGE], ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path: Path):
    lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(?:- )?uses:", line)]
    assert lines
    assert [line for line in lines if not USES_PINNED.match(line)] == []


@pytest.mark.parametrize("path", [BUILD, JUDGE], ids=lambda p: p.name)
def test_no_template_expansion_in_scripts_and_no_secrets(path: Path):
    workflow = _load(path)
    assert workflow["permissions"] == {}
    scripts = [step["run"] for _, step in _steps(workflow) if "run" in step]
    assert [s for s in scripts if "${{" in s] == []
    assert "secrets." not in path.read_text()
    for job_id, step in _steps(workflow):
        if _uses(step, "actions/checkout"):
            assert step["with"]["persist-credentials"] in (False, "false"), (job_id, step)


def test_build_is_an_unprivileged_pull_request_job_that_uploads_the_bundle():
    workflow = _load(BUILD)
    assert list(workflow["on"]) == ["pull_request"]
    assert {job_id: job["permissions"] for job_id, job in workflow["jobs"].items()} == {"build": {"contents": "read"}}
    runs = [step["run"] for _, step in _steps(workflow) if "run" in step]
    assert any(f"tinygate build --out {BUNDLE}" in run for run in runs)
    [upload] = [step for _, step in _steps(workflow) if _uses(step, "actions/upload-artifact")]
    assert upload["with"]["name"] == BUNDLE and upload["with"]["path"] == BUNDLE
    assert upload["with"]["if-no-files-found"] == "error"


def test_judge_runs_only_default_branch_code_on_the_build_runs_artifact():
    build, judge = _load(BUILD), _load(JUDGE)
    assert judge["permissions"] == {}
    assert judge["on"] == {"workflow_run": {"workflows": [build["name"]], "types": ["completed"]}}

    # The default branch's code: checkout with neither a ref nor a repository (on workflow_run, the
    # default is the default branch's head), so never the pull request's head.
    checkouts = [step for _, step in _steps(judge) if _uses(step, "actions/checkout")]
    assert checkouts
    for step in checkouts:
        assert not {"ref", "repository"} & set(step.get("with", {})), step
    assert "head_sha" not in json.dumps(checkouts) and "pull_request" not in json.dumps(checkouts)

    # The bundle of the triggering run, downloaded outside the checkout (the workspace).
    [download] = [step for _, step in _steps(judge) if _uses(step, "actions/download-artifact")]
    assert download["with"]["name"] == BUNDLE
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    assert download["with"]["path"] == "${{ runner.temp }}/gate-bundle"
    assert "workspace" not in download["with"]["path"]
    [judging] = [step["run"] for _, step in _steps(judge) if "tinygate judge" in step.get("run", "")]
    assert '"$RUNNER_TEMP/gate-bundle"' in judging and "--approved" in judging

    # The label is looked up through the API, its name given through env, never spliced into a script.
    assert any(step.get("env", {}).get("LABEL") == APPROVAL_LABEL for _, step in _steps(judge))

    # The verdict is a commit status on the pull request's head commit, posted even when the build failed.
    status = judge["jobs"]["status"]
    assert status["if"] == "${{ !cancelled() }}"
    [post] = status["steps"]
    assert post["env"]["HEAD_SHA"] == "${{ github.event.workflow_run.head_sha }}"
    assert post["env"]["BUILD"] == "${{ github.event.workflow_run.conclusion }}"
    assert 'repos/$REPO/statuses/$HEAD_SHA' in post["run"] and "context=tinygate" in post["run"]
    judge_job = judge["jobs"]["judge"]
    assert judge_job["if"] == "github.event.workflow_run.conclusion == 'success'"
    assert "summary.md" in json.dumps(judge_job["steps"]) and "GITHUB_STEP_SUMMARY" in json.dumps(judge_job["steps"])


def test_judge_permissions_are_split_so_no_job_holds_a_write_token_and_the_bundle():
    judge = _load(JUDGE)
    permissions = {job_id: job["permissions"] for job_id, job in judge["jobs"].items()}
    assert permissions == {
        "label": {"pull-requests": "read"},
        "judge": {"contents": "read", "actions": "read"},
        "status": {"statuses": "write"},
    }
    # The one job with a write token uses no action and checks nothing out: it only calls the API.
    assert [step for step in judge["jobs"]["status"]["steps"] if "uses" in step] == []
