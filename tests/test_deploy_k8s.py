"""deploy/k8s: every manifest against the Kubernetes OpenAPI schemas (offline, via
kubernetes-validate), the CRDs (KafkaTopic, PodMonitor, PrometheusRule) by shape,
and the wiring between them and the config (ports, probes, topics, secrets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy_support import (
    DEMO_CONFIG,
    K8S_CONFIG,
    K8S_DIR,
    STRIMZI_DIR,
    dummy_env,
    load_yaml,
    load_yaml_docs,
    secret_env_names,
)

K8S_VERSION = "1.33.0"  # one of the versions kubernetes-validate ships
CRD_KINDS = {"KafkaTopic", "PodMonitor", "PrometheusRule"}
MANIFESTS = sorted(
    p
    for p in [*K8S_DIR.glob("*.yaml"), *STRIMZI_DIR.glob("*.yaml")]
    if p.name != "kustomization.yaml"
)
CONFIG_PATH = "/etc/webhook-bridge/config.toml"
# Each process gets only the secrets it uses (Kafka credentials are optional).
KAFKA_SECRET, PROVIDER_SECRET, SINK_SECRET = (
    "webhook-bridge-kafka",
    "webhook-bridge-providers",
    "webhook-bridge-sinks",
)
SECRETS_OF = {
    "webhook-bridge-gateway": {KAFKA_SECRET, PROVIDER_SECRET},
    "webhook-bridge-fanout": {KAFKA_SECRET, SINK_SECRET},
}
CONFIGMAP_NAME = "webhook-bridge-config"


def all_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in MANIFESTS for doc in load_yaml_docs(path)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in all_docs() if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(kind) if d["metadata"]["name"] == name]
    return doc


def workloads() -> list[dict[str, Any]]:
    return by_kind("Deployment") + by_kind("StatefulSet") + by_kind("Job")


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        pytest.param(p, d, id=f"{p.name}:{d['kind']}/{d['metadata']['name']}")
        for p, d in all_docs()
        if d["kind"] not in CRD_KINDS
    ],
)
def test_manifest_validates_against_kubernetes_schema(path: Path, doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_configmap_from_generator_validates() -> None:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == CONFIGMAP_NAME
    data = {name: (K8S_DIR / name).read_text(encoding="utf-8") for name in generator["files"]}
    assert set(data) == {"config.toml"}
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP_NAME, "namespace": kustomization["namespace"]},
        "data": data,
    }
    kubernetes_validate.validate(configmap, K8S_VERSION, strict=True)


def test_only_known_crds() -> None:
    kinds = {doc["kind"] for _, doc in all_docs()}
    unknown = set()
    for kind in kinds - CRD_KINDS:
        doc = by_kind(kind)[0]
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.add(kind)
    assert not unknown, f"kinds with no schema and no shape check here: {unknown}"


def test_kustomizations_list_every_manifest() -> None:
    main = load_yaml(K8S_DIR / "kustomization.yaml")
    assert main["namespace"] == "webhook-bridge"
    listed = set(main["resources"])
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    # The Secret is a template: applying it would overwrite real secrets.
    assert "secret.template.yaml" not in listed
    assert listed == on_disk - {"secret.template.yaml"}
    strimzi = load_yaml(STRIMZI_DIR / "kustomization.yaml")
    assert set(strimzi["resources"]) == {"kafkatopics.yaml", "kafka-podmonitor.yaml"}


# --------------------------------------------------------------------------- CRDs by shape


def test_podmonitors_select_every_process_and_set_component() -> None:
    monitors = by_kind("PodMonitor")
    assert all(m["apiVersion"] == "monitoring.coreos.com/v1" for m in monitors)
    covered: set[str] = set()
    for workload in by_kind("Deployment") + by_kind("StatefulSet"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
        for monitor in monitors:
            spec = monitor["spec"]
            if selects(spec["selector"], labels):
                (endpoint,) = spec["podMetricsEndpoints"]
                assert endpoint["port"] in ports
                assert endpoint["path"] == "/metrics"
                assert {
                    "targetLabel": "component",
                    "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                } in endpoint["relabelings"]
                covered.add(labels["app.kubernetes.io/component"])
    assert covered == {"gateway", "compactor", "reorderer", "fanout"}


def test_prometheusrule_shape() -> None:
    (rule,) = by_kind("PrometheusRule")
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for item in group["rules"]:
            assert set(item) <= {"alert", "expr", "for", "labels", "annotations"}


def test_kafkatopics_shape() -> None:
    topics = load_yaml_docs(STRIMZI_DIR / "kafkatopics.yaml")
    for topic in topics:
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["kind"] == "KafkaTopic"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"]
        assert set(topic["spec"]) <= {"topicName", "partitions", "replicas", "config"}
        assert topic["spec"]["partitions"] == 12
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"]["min.insync.replicas"] == 2
        name = topic["spec"]["topicName"]
        compacted = name.endswith((".dedup-state", ".reorder-state"))
        assert (topic["spec"]["config"].get("cleanup.policy") == "compact") == compacted, name


def test_kafkatopics_cover_the_demo_providers_but_not_the_demo_receiver() -> None:
    # Production gets every provider topic the demo has; the demo's HTTP receiver
    # does not exist in a cluster, so its DLQ must not either (k8s config ships it
    # commented out).
    from schemas.config import load
    from schemas.topics import implied_topics

    names = {t["spec"]["topicName"] for t in load_yaml_docs(STRIMZI_DIR / "kafkatopics.yaml")}
    demo = {spec.name for spec in implied_topics(load(DEMO_CONFIG, env=dummy_env(DEMO_CONFIG)))}
    assert demo - names == {"webhooks.dlq.demo-receiver"}
    assert names - demo == set()


def test_kafkatopics_match_the_k8s_config_exactly() -> None:
    # `webhook-bridge topics` (the Job) refuses topics whose partitions differ.
    from schemas.config import load
    from schemas.topics import implied_topics

    expected = {
        spec.name: (spec.partitions, spec.replication_factor, spec.config)
        for spec in implied_topics(load(K8S_CONFIG, env=dummy_env(K8S_CONFIG)))
    }
    actual = {
        t["spec"]["topicName"]: (
            t["spec"]["partitions"],
            t["spec"]["replicas"],
            {k: str(v) for k, v in t["spec"]["config"].items()},
        )
        for t in load_yaml_docs(STRIMZI_DIR / "kafkatopics.yaml")
    }
    assert actual == expected, "python -m tests.deploy_support kafkatopics regenerates them"


# --------------------------------------------------------------------------- wiring


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_k8s_config_parses_and_listens_on_the_container_ports() -> None:
    from schemas.config import load

    settings = load(K8S_CONFIG, env=dummy_env(K8S_CONFIG))
    assert settings.gateway.host == "0.0.0.0"
    assert settings.topics.partitions == 12
    assert settings.topics.replication_factor == 3
    ports = {
        "gateway": settings.gateway.port,
        "compactor": settings.compactor.metrics_port,
        "reorderer": settings.reorderer.metrics_port,
        "fanout": settings.fanout.metrics_port,
    }
    for stage in (settings.compactor, settings.reorderer, settings.fanout):
        assert stage.metrics_host == "0.0.0.0"
    for workload in by_kind("Deployment") + by_kind("StatefulSet"):
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        (container,) = pod_spec(workload)["containers"]
        assert [p["containerPort"] for p in container["ports"]] == [ports[component]]
        assert container["args"] == [component, "--config", CONFIG_PATH]


def test_every_workload_is_hardened_and_gets_config_and_secrets() -> None:
    for workload in workloads():
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] == CONFIGMAP_NAME
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"] and container["resources"]["limits"], name
            refs = {e["secretRef"]["name"]: e["secretRef"] for e in container["envFrom"]}
            assert set(refs) == SECRETS_OF.get(name, {KAFKA_SECRET}), name
            assert refs[KAFKA_SECRET].get("optional") is True, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/etc/webhook-bridge"] == "config", name
            assert mounts["/tmp"] == "tmp", name
            if workload["kind"] != "Job":
                for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                    assert container[probe]["httpGet"]["path"] == path, f"{name} {probe}"


def test_gateway_drains_before_it_is_killed() -> None:
    from schemas.config import load

    settings = load(K8S_CONFIG, env=dummy_env(K8S_CONFIG))
    deployment = named("Deployment", "webhook-bridge-gateway")
    pod = pod_spec(deployment)
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = int(command[1])
    assert pre_stop_s >= 5, "long enough for endpoints to drop the pod"
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + settings.gateway.drain_timeout_s + 5
    assert "replicas" not in deployment["spec"], "the HPA owns replicas"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_gateway_service_pdb_and_hpa_target_the_gateway() -> None:
    deployment = named("Deployment", "webhook-bridge-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = named("Service", "webhook-bridge-gateway")
    assert selects({"matchLabels": service["spec"]["selector"]}, labels)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = named("PodDisruptionBudget", "webhook-bridge-gateway")
    assert selects(pdb["spec"]["selector"], labels)
    hpa = named("HorizontalPodAutoscaler", "webhook-bridge-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "webhook-bridge-gateway")
    assert hpa["spec"]["minReplicas"] >= 2 > pdb["spec"]["minAvailable"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_transactional_stages_have_a_stable_instance_id() -> None:
    for stage in ("compactor", "reorderer"):
        sts = named("StatefulSet", f"webhook-bridge-{stage}")
        headless = named("Service", sts["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        (container,) = pod_spec(sts)["containers"]
        env = {e["name"]: e for e in container["env"]}
        source = env[f"BRIDGE_{stage.upper()}_INSTANCE_ID"]["valueFrom"]["fieldRef"]
        assert source["fieldPath"] == "metadata.name", "pod name = <statefulset>-<ordinal>"
        assert pod_spec(sts)["terminationGracePeriodSeconds"] >= 30
    compactor = named("StatefulSet", "webhook-bridge-compactor")
    (container,) = pod_spec(compactor)["containers"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/webhook-bridge/compactor" in mounts, "state_dir must be writable"


def test_topics_job_and_secret_template() -> None:
    (job,) = by_kind("Job")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["topics", "--config", CONFIG_PATH]
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    secrets = {d["metadata"]["name"]: d for d in load_yaml_docs(K8S_DIR / "secret.template.yaml")}
    assert set(secrets) == {KAFKA_SECRET, PROVIDER_SECRET, SINK_SECRET}
    providers = secrets[PROVIDER_SECRET]["stringData"]
    assert set(providers) == set(secret_env_names(K8S_CONFIG, ("sources",)))
    assert set(providers.values()) == {"REPLACE_ME"}
    assert set(secrets[SINK_SECRET]["stringData"]) == set(secret_env_names(K8S_CONFIG, ("sinks",)))
