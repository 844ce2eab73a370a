"""deploy/k8s: rendered by the real kubectl (kustomize), every object accepted by the
Kubernetes schemas (kubernetes-validate, strict), and the policies we promise: probes,
resources, non-root, read-only root filesystem, pinned images, termination consistent with the
reload mercy, settings that cannot drift from app/config.py."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.config import SETTINGS_BY_NAME
from app.runtime.kubernetes import POD, SECRET, settings_env

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
TARGETS = ["base", "overlays/example", "overlays/model-volume"]
#: The Kubernetes version the objects are validated against (kubernetes-validate's schemas).
K8S_VERSION = "1.34.0"


def render(target: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not installed (.ci/run installs Debian's kubernetes-client)"
    out = subprocess.run([kubectl, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=TARGETS)
def objects(request):
    return request.param, render(request.param)


def one(objs, kind):
    (found,) = [o for o in objs if o["kind"] == kind]
    return found


def settings_of(objs) -> dict:
    return one(objs, "ConfigMap")["data"]


def test_settings_env_is_generated_from_app_config():
    assert (K8S / "base" / "settings.env").read_text() == settings_env(), \
        "regenerate: python -m app k8s-env > deploy/k8s/base/settings.env"


def test_pod_paths_agree_with_the_dockerfiles():
    flask = (ROOT / "Dockerfile-flask").read_text()
    nginx = (ROOT / "Dockerfile-nginx").read_text()
    for name in ("APP_ROOT", "RUN_DIR", "TOUCH_RELOAD", "TOUCH_CHAIN_RELOAD"):
        assert re.search(rf"\b{name}={re.escape(POD[name])}\b", flask), name
    for name in ("NGINX_RUN_DIR", "NGINX_ACCESS_LOG", "NGINX_ERROR_LOG", "STATIC_ROOT"):
        assert re.search(rf"\b{name}={re.escape(POD[name])}\b", nginx), name


def test_every_object_is_valid_kubernetes(objects):
    import kubernetes_validate
    _, objs = objects
    assert {o["kind"] for o in objs} >= {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
                                         "PodDisruptionBudget", "NetworkPolicy"}
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_configmap_is_the_settings(objects):
    target, objs = objects
    data = settings_of(objs)
    base = dict(line.split("=", 1) for line in settings_env().splitlines())
    assert set(data) == set(base)
    assert not set(SECRET) & set(data)  # secrets come from the Secret, never the ConfigMap
    changed = {k for k in data if data[k] != base[k]}
    assert changed == {"base": set(), "overlays/example": {"WORKERS"},
                       "overlays/model-volume": {"MODEL_REPOSITORY"}}[target]


def containers(deploy):
    spec = deploy["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"] + spec.get("initContainers", [])}


def test_pod_policy(objects):
    _, objs = objects
    deploy = one(objs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    for name, c in containers(deploy).items():
        image = c["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), (name, image)
        assert "set-by" not in image, (name, image)  # the kustomization's images: gave the tag
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}, (name, kind)
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc.get("runAsUser", pod["securityContext"]["runAsUser"]) != 0
    app = containers(deploy)["app"]
    probe = lambda p: app[p]["exec"]["command"]  # noqa: E731
    assert probe("startupProbe")[-1] == probe("readinessProbe")[-1] == "/readyz"
    assert probe("livenessProbe")[-1] == "/healthz"
    assert app["startupProbe"]["periodSeconds"] * app["startupProbe"]["failureThreshold"] >= 300
    nginx = containers(deploy)["nginx"]
    assert nginx["readinessProbe"]["httpGet"]["path"] == "/nginx-health"


def test_writable_paths_are_emptydirs(objects):
    _, objs = objects
    deploy = one(objs, "Deployment")
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    data = settings_of(objs)
    app, nginx = containers(deploy)["app"], containers(deploy)["nginx"]
    mounts = lambda c: {m["mountPath"]: m["name"] for m in c["volumeMounts"]}  # noqa: E731
    for path in (data["RUN_DIR"], data["PROMETHEUS_MULTIPROC_DIR"], str(Path(data["TOUCH_RELOAD"]).parent)):
        assert any(path == m or path.startswith(m + "/") for m in mounts(app)), path
    assert data["NGINX_RUN_DIR"] in mounts(nginx)
    for c in (app, nginx):
        for name in mounts(c).values():
            assert "emptyDir" in volumes[name], name


def test_termination_is_consistent_with_the_reload_mercy(objects):
    """Endpoints go first (preStop sleeps), nginx drains before uWSGI, and the grace period
    covers uWSGI's graceful shutdown (RELOAD_MERCY) after its preStop."""
    _, objs = objects
    deploy = one(objs, "Deployment")
    data = settings_of(objs)
    grace = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    app, nginx = containers(deploy)["app"], containers(deploy)["nginx"]
    app_sleep = int(app["lifecycle"]["preStop"]["exec"]["command"][-1])
    nginx_sleep = int(re.match(r"sleep (\d+);", nginx["lifecycle"]["preStop"]["exec"]["command"][-1]).group(1))
    mercy = int(data["RELOAD_MERCY"])
    assert nginx_sleep < app_sleep
    assert grace >= app_sleep + mercy
    assert int(data["UPSTREAM_TIMEOUT"]) < int(data["HARAKIRI"]) < mercy
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_service_hpa_pdb_networkpolicy_point_at_the_pods(objects):
    _, objs = objects
    deploy = one(objs, "Deployment")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    matches = lambda sel: all(labels.get(k) == v for k, v in sel.items())  # noqa: E731
    port = int(settings_of(objs)["PORT"])
    svc = one(objs, "Service")
    assert matches(svc["spec"]["selector"])
    (http,) = [p for p in containers(deploy)["nginx"]["ports"] if p["name"] == svc["spec"]["ports"][0]["targetPort"]]
    assert http["containerPort"] == port
    assert deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert matches(one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    netpol = one(objs, "NetworkPolicy")
    assert matches(netpol["spec"]["podSelector"]["matchLabels"])
    assert [p["port"] for r in netpol["spec"]["ingress"] for p in r["ports"]] == [port]
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= one(objs, "PodDisruptionBudget")["spec"]["minAvailable"] + 1


def test_model_volume_overlay_serves_models_from_the_init_container():
    objs = render("overlays/model-volume")
    deploy = one(objs, "Deployment")
    init = containers(deploy)["models"]
    app = containers(deploy)["app"]
    repo = settings_of(objs)["MODEL_REPOSITORY"]
    (mount,) = [m for m in app["volumeMounts"] if m["mountPath"] == repo]
    assert mount["readOnly"] is True
    assert [m["name"] for m in init["volumeMounts"]] == [mount["name"]]
    assert init["image"] == "modelserver-models:2026.12.02"
    assert "COPY models /models" in (ROOT / "Dockerfile-models").read_text()


def test_queue_depth_metric_of_the_example_hpa_exists():
    from app.serving import metrics
    hpa = one(render("overlays/example"), "HorizontalPodAutoscaler")
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert names == ["model_queue_depth"]
    assert "model_queue_depth" in Path(metrics.__file__).read_text()
    assert SETTINGS_BY_NAME["RELOAD_MERCY"].group == "uwsgi"
