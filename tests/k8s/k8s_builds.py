"""What the k8s tests build: every overlay alone, with each component and with all
components, in the two ways k8s/README.md shows; and the helpers that build them."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from k8s_checks import Obj

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("dev", "prod")
# Components an overlay lists itself (prod: default deny is not optional there).
BUILT_IN = {"dev": (), "prod": ("network-policies",)}
# keda stays last: it replaces the consumers' HPAs, which bluegreen reads (k8s/README.md).
COMPONENTS = ("network-policies", "loadtest", "canary", "bluegreen", "keda")
TEST_SECRETS = {
    "admin-token": "test-admin-token",
    "gateway-admin-token": "test-gateway-admin-token",
    "api-keys": "test-api-key-0123456789",  # the gateway wants 16 characters or more
    "grafana-admin-password": "test-grafana-password",
}


@dataclass(frozen=True)
class BuildSpec:
    """One thing to build. style "overlay": the components listed in (a copy of) the overlay's
    own kustomization, as k8s/README.md recommends; style "wrapper": a kustomization of its own
    that takes the overlay as a resource and adds the components on top."""

    overlay: str
    components: tuple[str, ...]
    style: str = "overlay"

    @property
    def id(self) -> str:
        parts = "+".join(self.components) if self.components else "plain"
        if self.effective == COMPONENTS:
            parts = "all"
        return f"{self.overlay}[{parts}]" + ("(wrapper)" if self.style == "wrapper" else "")

    @property
    def prod(self) -> bool:
        return self.overlay == "prod"

    @property
    def effective(self) -> tuple[str, ...]:
        """Every component in the build: the overlay's own and the ones this spec adds."""
        own = BUILT_IN[self.overlay]
        return own + tuple(c for c in self.components if c not in own)


def _specs() -> list[BuildSpec]:
    specs = []
    for overlay in OVERLAYS:
        specs.append(BuildSpec(overlay, ()))
        for component in COMPONENTS:
            specs.append(BuildSpec(overlay, (component,)))
            if component not in BUILT_IN[overlay]:  # a wrapper cannot add it a second time
                specs.append(BuildSpec(overlay, (component,), "wrapper"))
        specs.append(BuildSpec(overlay, COMPONENTS))
        specs.append(
            BuildSpec(
                overlay, tuple(c for c in COMPONENTS if c not in BUILT_IN[overlay]), "wrapper"
            )
        )
    return specs


BUILD_SPECS = _specs()


@dataclass
class Build:
    spec: BuildSpec
    objects: list[Obj]

    @property
    def component_names(self) -> set[str]:
        return set(self.spec.effective)


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        message = "kubectl (with kustomize built in) is not on PATH; the k8s tests need it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def kustomize(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_secrets(overlay_dir: Path, values: dict[str, str] = TEST_SECRETS) -> None:
    lines = [f"{key}={value}" for key, value in values.items()]
    (overlay_dir / "secrets.env").write_text("\n".join(lines) + "\n")


def prepare(root: Path, spec: BuildSpec) -> Path:
    """The directory to build for a spec, inside the scratch copy `root` of k8s/."""
    name = (
        spec.id.replace("[", "-").replace("]", "").replace("+", "-").replace("(", "-").rstrip(")")
    )
    if spec.style == "overlay":
        target = root / "overlays" / f"build-{name}"
        shutil.copytree(root / "overlays" / spec.overlay, target)
        doc = yaml.safe_load((target / "kustomization.yaml").read_text())
        if spec.components:
            # The overlay's own components stay, the spec's come after them, in its order.
            doc["components"] = [f"../../components/{c}" for c in spec.effective]
        (target / "kustomization.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return target
    target = root / "wrappers" / name
    target.mkdir(parents=True)
    doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "mesh",
        "resources": [f"../../overlays/{spec.overlay}"],
        "components": [f"../../components/{c}" for c in spec.components],
    }
    (target / "kustomization.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


def get_build(builds: dict[str, Build | str], spec_id: str) -> Build:
    result = builds[spec_id]
    if isinstance(result, str):
        pytest.fail(f"kubectl kustomize failed for {spec_id}: {result}")
    return result
