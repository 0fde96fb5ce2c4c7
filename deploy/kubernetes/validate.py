#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests strictly: unknown keys are errors.

Reads a multi-document YAML stream (`kubectl kustomize OVERLAY | validate.py`)
and checks each object: built-in kinds against the Kubernetes OpenAPI
schemas of `kubernetes-validate` (strict mode), a ServiceMonitor against
the prometheus-operator models of `cloudcoil-models-prometheus-operator`
with extra keys forbidden. An object of any other kind is an error, so
nothing passes unchecked. Prints one line per object; exits 1 on any error.

    pip install kubernetes-validate cloudcoil-models-prometheus-operator
"""
import inspect
import sys

import kubernetes_validate
import pydantic
import yaml

K8S_VERSION = "1.32.0"


def strict_crd_models():
    """The prometheus-operator v1 models, rebuilt to refuse unknown keys."""
    from cloudcoil.models.prometheus_operator import v1
    import cloudcoil.apimachinery as meta

    models = [
        c
        for mod in (v1, meta)
        for c in vars(mod).values()
        if inspect.isclass(c) and issubclass(c, pydantic.BaseModel)
    ]
    for c in models:
        c.model_config["extra"] = "forbid"
    # Nested models are embedded when a parent is built: rebuild until the
    # innermost change has reached every parent.
    for _ in range(4):
        for c in models:
            c.model_rebuild(force=True)
    return {("monitoring.coreos.com/v1", "ServiceMonitor"): v1.ServiceMonitor}


def main():
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    if not docs:
        print("error: no manifests on stdin")
        return 1
    crds = strict_crd_models()
    failed = 0
    for d in docs:
        kind, api = d.get("kind"), d.get("apiVersion")
        name = f"{kind}/{d.get('metadata', {}).get('name')}"
        try:
            model = crds.get((api, kind))
            if model is not None:
                model.model_validate(d)
            else:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            print(f"ok {api} {name}")
        except kubernetes_validate.SchemaNotFoundError:
            print(f"error {api} {name}: no schema to check it against")
            failed += 1
        except (kubernetes_validate.ValidationError, pydantic.ValidationError) as e:
            print(f"error {api} {name}: {e}")
            failed += 1
    print(f"{len(docs) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
