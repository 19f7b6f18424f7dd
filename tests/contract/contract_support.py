"""schemathesis as the contract tests run it: the real CLI in a subprocess, every check on,
every warning a failure, a JSON report read back for the counts.

The configuration is written per run (what a document has decides which overrides apply: an
override that matches no operation is itself a warning, and so a failure). The one override:
``POST .../orders`` may answer 422 to a schema-valid order, since an order can be perfectly
formed and still name a SKU the catalogue does not have (which SKUs exist is data, not part of
the contract). The catalogue's SKUs and the ids of real orders are offered as dictionaries, so
generated requests reach real resources half of the time.

One worker per run: schemathesis' workers are threads, and on CPython 3.11 two threads
parsing source at once (Hypothesis describing a strategy) can fail with "SystemError: AST
constructor recursion depth mismatch" (CPython gh-106905; seen here). Runs that may go side
by side are separate processes instead (:func:`start_schemathesis`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "services" / "inventory" / "catalog.json"
SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]


@dataclass
class Run:
    target: str
    exit_code: int
    generated: int
    failures: list[Any]
    warnings: dict[str, list[str]]
    seconds: float
    output: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.failures and self.generated > 0

    def summary(self) -> str:
        return f"{self.target}: {self.generated} test cases in {self.seconds:.0f}s"


def catalogue_skus() -> list[str]:
    return [product["sku"] for product in json.loads(CATALOGUE.read_text())]


def _toml(value: Any) -> str:
    return json.dumps(value)  # strings, numbers, lists and booleans read the same in TOML


def config_text(
    document: dict[str, Any],
    *,
    dictionaries: dict[str, list[str]],
    bindings: dict[str, str],
    auth: dict[str, dict[str, str]],
) -> str:
    """A schemathesis.toml for one document."""
    lines = [
        'generation.database = "none"',
        "request-timeout = 10.0",
        "warnings.fail-on = true",
        "",
        "[parameters]",
        *(
            f"{_toml(key)} = {{ dictionary = {_toml(name)}, probability = 0.5 }}"
            for key, name in bindings.items()
        ),
    ]
    for name, values in dictionaries.items():
        lines += ["", f"[dictionaries.{name}]", f"values = {_toml(values)}"]
    for scheme, settings in auth.items():
        if scheme in document.get("components", {}).get("securitySchemes", {}):
            lines += ["", f"[auth.openapi.{scheme}]"]
            lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    posts_orders = [p for p, item in document["paths"].items() if p.endswith("/orders")]
    if any("post" in document["paths"][p] for p in posts_orders):
        lines += [
            "",
            "[[operations]]",
            'include-path-regex = "/orders$"',
            'include-method = "POST"',
            "checks.positive_data_acceptance.expected-statuses = "
            + _toml(["2xx", "401", "403", "404", "422", "429"]),
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Pending:
    target: str
    process: subprocess.Popen[str]
    report: Path
    log: Path
    timeout: float

    def wait(self) -> Run:
        try:
            output, _ = self.process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        self.log.write_text(output)
        if not self.report.exists():
            return Run(self.target, self.process.returncode, 0, [], {}, 0.0, output)
        data = json.loads(self.report.read_text())
        return Run(
            self.target,
            self.process.returncode,
            int(data["test_cases"]["generated"]),
            list(data["failures"]),
            {name: found for name, found in data["warnings"].items() if found},
            float(data["running_time"]),
            output,
        )


def run_schemathesis(
    target: str, url: str, document: dict[str, Any], workdir: Path, **how: Any
) -> Run:
    """Run every check and every phase (examples, coverage, fuzzing, stateful) on ``url``."""
    return start_schemathesis(target, url, document, workdir, **how).wait()


def start_schemathesis(
    target: str,
    url: str,
    document: dict[str, Any],
    workdir: Path,
    *,
    max_examples: int,
    exclude_paths: tuple[str, ...] = (),
    dictionaries: dict[str, list[str]] | None = None,
    bindings: dict[str, str] | None = None,
    auth: dict[str, dict[str, str]] | None = None,
    overrides: str = "",
    exclude_checks: tuple[str, ...] = (),
    timeout: float = 240,
) -> Pending:
    """Start a run in its own process; ``overrides``: more TOML for this document."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{target}.toml"
    config.write_text(
        config_text(
            document,
            dictionaries=dictionaries or {},
            bindings=bindings or {},
            auth=auth or {},
        )
        + overrides
    )
    report = workdir / f"{target}.json"
    args = [
        *SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        url,
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        *(["--exclude-checks", ",".join(exclude_checks)] if exclude_checks else []),
        "--workers",
        "1",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    for path in exclude_paths:
        args += ["--exclude-path", path]
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=workdir,
    )
    return Pending(target, process, report, workdir / f"{target}.txt", timeout)
