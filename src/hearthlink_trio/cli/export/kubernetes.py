"""The config as Kubernetes manifests (``hearthlink export kubernetes``).

One multi-document YAML: an optional Namespace, the data dir's PersistentVolumeClaim, then
per table a Deployment and a Service (a task: a Job, run once). The secrets are referenced
by name in the Secret :data:`~hearthlink_trio.cli.export.mapping.SECRET_NAME`, which the
user creates.

Waiting on dependencies: a pod's init containers wait until each dependency's Service
accepts a connection (a Service routes only to ready pods, so this is "healthy"; for
"started" it is stricter than needed). A task waited on for its completion is waited for
by ``kubectl wait`` on its Job, so it runs once however many pods wait for it (with
``replicas = 3``, a migration still runs once). Those waits run under the ServiceAccount
:data:`JOB_WAITER`, whose Role may only get, list and watch Jobs in the namespace.
"""

from __future__ import annotations

import math
from typing import Any

from hearthlink_trio.cli.export.mapping import (
    BUNDLED_IMAGE,
    DATA_PATH,
    DATA_VOLUME,
    SECRET_NAME,
    Plan,
    Unit,
    comment,
    cron_expression,
    dns_label,
    dump,
    header,
    memory_size,
    secret_files,
    secret_lines,
    wrapped,
)
from hearthlink_trio.config.resolved import Health
from hearthlink_trio.errors import ConfigError

#: Kubernetes' shortest probe period, used for the fast probing of the startup phase.
STARTUP_PROBE_PERIOD = 1
#: The image of the init containers that wait for a dependency's port.
WAIT_IMAGE = "busybox:1.36"
#: The default image of the init containers that wait for a task's Job (kubectl and a
#: shell); ``hearthlink export kubernetes --kubectl-image`` names another.
KUBECTL_IMAGE = "bitnami/kubectl:1.30"
#: The ServiceAccount, Role and RoleBinding under which a pod waits for a Job.
JOB_WAITER = "hearthlink-job-waiter"
#: How long one ``kubectl wait`` waits before the loop asks again (and checks for failure).
JOB_WAIT_SECONDS = 30
#: The bundled image's user (and group): the data volume is made writable for it.
BUNDLED_UID = 10001
#: An unprivileged user for the waiting init containers.
NOBODY_UID = 65534
#: The size asked for the data dir's volume; a starting point, to be changed to fit.
DATA_VOLUME_SIZE = "1Gi"
PART_OF = "hearthlink"


def seconds(value: float) -> int:
    """Whole seconds for a Kubernetes field, rounded up, at least 1."""
    return max(1, math.ceil(value))


def _escape(text: str) -> str:
    # Kubernetes expands $(VAR) in command, args and env values; $$ is a literal $.
    return text.replace("$", "$$")


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def _metadata(name: str, namespace: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if namespace:
        out["namespace"] = namespace
    out["labels"] = _labels(name)
    return out


def _handler(unit: Unit) -> dict[str, Any] | None:
    probe = unit.probe
    if probe.kind == "http":
        return {"httpGet": {"path": probe.path, "port": unit.port}}
    if probe.kind == "tcp":
        return {"tcpSocket": {"port": unit.port}}
    if probe.kind == "exec":
        return {"exec": {"command": list(probe.argv)}}
    return None


def probes(unit: Unit, health: Health) -> dict[str, Any]:
    """The startup, readiness and liveness probes of ``unit`` (none for probe "none").

    The startup probe runs every second (the fastest Kubernetes probes) for as many tries
    as cover ``startup_period``; after it, readiness and liveness follow the steady period.
    """
    handler = _handler(unit)
    if handler is None:
        return {}
    timeout = seconds(health.timeout)
    steady = {
        **handler,
        "periodSeconds": seconds(health.steady_interval),
        "timeoutSeconds": timeout,
        "failureThreshold": health.failure_threshold,
    }
    return {
        "startupProbe": {
            **handler,
            "periodSeconds": STARTUP_PROBE_PERIOD,
            "timeoutSeconds": timeout,
            "failureThreshold": max(1, math.ceil(health.startup_period / STARTUP_PROBE_PERIOD)),
        },
        "readinessProbe": steady,
        "livenessProbe": dict(steady),
    }


def _env(unit: Unit) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": key, "value": _escape(value)} for key, value in unit.env.items()
    ]
    env += [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": var}}}
        for var in unit.secret_vars
    ]
    return env


def _container(unit: Unit, health: Health, *, probed: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": unit.name,
        "image": unit.image,
        "args": [_escape(part) for part in unit.image_args],
    }
    if probed and unit.port is not None:
        out["ports"] = [{"containerPort": unit.port, "protocol": "TCP"}]
    out["env"] = _env(unit)
    if probed:
        out.update(probes(unit, health))
    if unit.max_memory is not None:
        out["resources"] = {"limits": {"memory": memory_size(unit.max_memory, ("Ki", "Mi", "Gi"))}}
    out["volumeMounts"] = [{"name": "data", "mountPath": DATA_PATH}]
    lifecycle = {}
    if unit.post_start:
        lifecycle["postStart"] = {"exec": {"command": list(unit.post_start)}}
    if unit.pre_stop:
        lifecycle["preStop"] = {"exec": {"command": list(unit.pre_stop)}}
    if lifecycle:
        out["lifecycle"] = lifecycle
    if unit.bundled:
        out["securityContext"] = {"runAsNonRoot": True, "allowPrivilegeEscalation": False}
    return out


def _wait_container(dependency: Unit) -> dict[str, Any]:
    name, port = dependency.name, dependency.port
    return {
        "name": f"wait-for-{name}"[:63].rstrip("-"),
        "image": WAIT_IMAGE,
        "command": [
            "sh",
            "-c",
            f"until nc -z -w 1 {name} {port}; do echo waiting for {name}; sleep 1; done",
        ],
        "securityContext": {
            "runAsUser": NOBODY_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
        },
    }


def _job_wait_container(task: str, image: str) -> dict[str, Any]:
    # kubectl wait fails at once while the Job does not exist yet (both are applied
    # together), hence the loop; a Job that has failed ends the wait with an error, as a
    # failed task fails its dependents in hearthlink run.
    script = (
        f"until kubectl wait --for=condition=complete --timeout={JOB_WAIT_SECONDS}s "
        f"job/{task}; do "
        f"if kubectl wait --for=condition=failed --timeout=0s job/{task} 2>/dev/null; "
        f"then echo job {task} failed; exit 1; fi; "
        f"echo waiting for job {task}; sleep 1; done"
    )
    return {
        "name": f"wait-for-job-{task}"[:63].rstrip("-"),
        "image": image,
        "command": ["sh", "-c", script],
        "securityContext": {
            "runAsUser": NOBODY_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
        },
    }


def waits_for_jobs(plan: Plan, unit: Unit) -> bool:
    """``unit`` waits for some task to complete (its pods run ``kubectl wait``)."""
    return any(
        plan.unit(dep).is_task and not plan.unit(dep).is_scheduled and condition != "started"
        for dep, condition in unit.conditions.items()
    )


def _init_containers(
    plan: Plan, unit: Unit, notes: list[str], kubectl_image: str
) -> list[dict[str, Any]]:
    out = []
    for dep, condition in unit.conditions.items():
        dependency = plan.unit(dep)
        if dependency.is_scheduled:
            if condition != "started":
                notes.append(
                    f"{unit.name} does not wait for {dep} to complete: {dep} is a CronJob, "
                    "whose Jobs have no name known in advance to wait for"
                )
        elif dependency.is_task:
            if condition != "started":
                out.append(_job_wait_container(dep, kubectl_image))
        elif dependency.port is None:
            notes.append(f"{unit.name} does not wait for {dep}: {dep} has no port to wait on")
        else:
            out.append(_wait_container(dependency))
    return out


def _pod(plan: Plan, unit: Unit, notes: list[str], kubectl_image: str) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if unit.is_task:
        spec["restartPolicy"] = "Never"
    if waits_for_jobs(plan, unit):
        spec["serviceAccountName"] = JOB_WAITER
    else:
        # Nothing in this pod talks to the API server: no token is mounted.
        spec["automountServiceAccountToken"] = False
    # No <NAME>_PORT variables from other Services: they could shadow a service's own.
    spec["enableServiceLinks"] = False
    spec["terminationGracePeriodSeconds"] = math.ceil(unit.stop_timeout)
    init = _init_containers(plan, unit, notes, kubectl_image)
    containers = [_container(unit, plan.config.health, probed=not unit.is_task)]
    if any(c["image"] == BUNDLED_IMAGE for c in [*init, *containers]):
        # A fresh volume is root's; the group makes it writable for the bundled image's user.
        spec["securityContext"] = {"fsGroup": BUNDLED_UID}
    if init:
        spec["initContainers"] = init
    spec["containers"] = containers
    spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": DATA_VOLUME}}]
    return {"metadata": {"labels": _labels(unit.name)}, "spec": spec}


def _wrap(notes: list[str]) -> list[str]:
    return [line for note in notes for line in wrapped(note)]


def _documents(
    plan: Plan, unit: Unit, namespace: str | None, kubectl_image: str
) -> list[tuple[list[str], Any]]:
    notes: list[str] = []
    if unit.stop_signal != "SIGTERM":
        notes.append(
            f"stop_signal {unit.stop_signal} is not carried over: Kubernetes stops a "
            "container with SIGTERM (or the image's STOPSIGNAL); a preStop hook can send "
            f"{unit.stop_signal} first"
        )
    if unit.on_failure:
        notes.append("on_failure is not carried over: Kubernetes has no hook for giving up")
    if unit.restart_with:
        notes.append(
            f"restarting with {', '.join(unit.restart_with)} (depends_on restart = true) is "
            "not carried over: a pod is not restarted when another is"
        )
    if unit.profiles:
        notes.append(
            f"profiles {', '.join(unit.profiles)} are not carried over: everything in these "
            "manifests is applied; leave this document out to leave the service out"
        )
    pod = _pod(plan, unit, notes, kubectl_image)
    if unit.is_scheduled:
        cron = cron_expression(unit.schedule)
        assert cron is not None, "a schedule cron cannot say is refused before rendering"
        restart = plan.config.restart
        cronjob: dict[str, Any] = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": _metadata(unit.name, namespace),
            "spec": {
                "schedule": cron,
                # hearthlink skips a run while the last one still runs.
                "concurrencyPolicy": "Forbid",
                "jobTemplate": {
                    "spec": {
                        "backoffLimit": 0 if unit.restart == "never" else restart.max_attempts,
                        "template": pod,
                    }
                },
            },
        }
        notes.append(
            "the schedule runs in the cluster's time zone (the controller's, often UTC), "
            "not this machine's local time; set spec.timeZone to change it"
        )
        return [([f"{unit.name}: a scheduled task ({unit.schedule})", *_wrap(notes)], cronjob)]
    if unit.is_task:
        restart = plan.config.restart
        # No ttlSecondsAfterFinished: a pod that starts later (a restart, a new replica)
        # waits for this Job again, and must find it completed, not gone.
        work: dict[str, Any] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _metadata(unit.name, namespace),
            "spec": {
                "backoffLimit": 0 if unit.restart == "never" else restart.max_attempts,
                "completions": unit.replicas,
                "parallelism": unit.replicas,
                "template": pod,
            },
        }
        return [([f"{unit.name}: a task, run to completion", *_wrap(notes)], work)]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(unit.name, namespace),
        "spec": {
            "replicas": unit.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": unit.name}},
            # Recreate: the old pods are gone before a new one starts (one writer, a lock).
            **({"strategy": {"type": "Recreate"}} if unit.strategy == "recreate" else {}),
            "template": pod,
        },
    }
    docs: list[tuple[list[str], Any]] = [
        ([f"{unit.name}: {unit.replicas} replica(s)", *_wrap(notes)], deployment)
    ]
    if unit.port is not None:
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(unit.name, namespace),
            "spec": {
                "selector": {"app.kubernetes.io/name": unit.name},
                "ports": [{"port": unit.port, "targetPort": unit.port, "protocol": "TCP"}],
            },
        }
        docs.append(([f"{unit.name}: reached as http://{unit.name}:{unit.port}"], service))
    return docs


def _job_waiter(namespace: str | None) -> list[tuple[list[str], Any]]:
    """The ServiceAccount of the pods that wait for Jobs, a Role that may only read Jobs,
    and the RoleBinding between them."""
    subject: dict[str, Any] = {"kind": "ServiceAccount", "name": JOB_WAITER}
    if namespace:
        subject["namespace"] = namespace
    return [
        (
            [
                "The pods that wait for a task's Job run under this account, which may only",
                "get, list and watch the Jobs of its namespace.",
            ],
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": _metadata(JOB_WAITER, namespace),
            },
        ),
        (
            [],
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": _metadata(JOB_WAITER, namespace),
                "rules": [
                    {
                        "apiGroups": ["batch"],
                        "resources": ["jobs"],
                        "verbs": ["get", "list", "watch"],
                    }
                ],
            },
        ),
        (
            [],
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": _metadata(JOB_WAITER, namespace),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": JOB_WAITER,
                },
                "subjects": [subject],
            },
        ),
    ]


def render_kubernetes(
    plan: Plan, *, namespace: str | None = None, kubectl_image: str = KUBECTL_IMAGE
) -> str:
    """The manifests of ``plan``, as one multi-document YAML.

    ``kubectl_image`` runs the init containers that wait for a task's Job: any image with
    ``sh`` and ``kubectl``.

    Raises:
        ConfigError: ``namespace`` is not a valid Kubernetes name.
    """
    if namespace is not None and not dns_label(namespace):
        raise ConfigError(
            [
                f"--namespace: {namespace!r} is not a valid Kubernetes name (lowercase letters, "
                "digits and '-', at most 63, starting and ending in a letter or digit)"
            ]
        )
    ns = f" -n {namespace}" if namespace else ""
    create = [f"  kubectl create secret generic {SECRET_NAME}{ns} \\"]
    files = secret_files(plan)
    for n, (var, _, file) in enumerate(files):
        end = " \\" if n < len(files) - 1 else ""
        create.append(f'    --from-literal={var}="$(cat {file})"{end}')
    lines = [
        *header(plan, "kubernetes"),
        "",
        "The secrets are never written here: the services read them from the Secret",
        f"{SECRET_NAME}, which you create before `kubectl apply -f` this file, with the",
        "values this machine uses (the data needs the key it was written with):",
        *create,
        'or with new values, e.g. "$(openssl rand -base64 32)". The variables:',
        *secret_lines(plan),
        f"The data dir is the PersistentVolumeClaim {DATA_VOLUME}, mounted at {DATA_PATH}.",
    ]
    documents: list[tuple[list[str], Any]] = []
    if namespace:
        documents.append(
            ([], {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        )
    documents.append(
        (
            [
                "The data dir, shared by every service. ReadWriteOnce: the pods that mount",
                "it run on one node; use ReadWriteMany where the cluster's storage has it.",
            ],
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": _metadata(DATA_VOLUME, namespace),
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": DATA_VOLUME_SIZE}},
                },
            },
        )
    )
    if any(waits_for_jobs(plan, unit) for unit in plan.units):
        documents += _job_waiter(namespace)
    for unit in plan.units:
        documents += _documents(plan, unit, namespace, kubectl_image)
    out = comment(lines)
    for notes, document in documents:
        out += "---\n" + comment(notes) + dump(document)
    return out
