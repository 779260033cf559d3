"""Tags that ask the run launcher for a GPU (and a model-cache mount) for the GPU stages.

Attach with `op_tags=GPU_OP_TAGS` on the GPU assets (captions, edit_instructions when run with a local LLM,
region_masks, edit_candidates, metric_scores). Both launchers read only their own tag, so one set works everywhere:

- `dagster-k8s/config`: read by the K8sRunLauncher (per run: the tags of a run are the union of its ops' tags) and
  by the k8s_job_executor (per step pod). Requests one `nvidia.com/gpu`, tolerates the usual GPU-node taint and
  mounts the model cache volume (a PVC named `ultraedit-model-cache`, see deploy/helm/values.yaml) at /models.
- `ecs/task_overrides` + `ecs/cpu` / `ecs/memory`: read by dagster-aws's EcsRunLauncher; a GPU
  resourceRequirement on the run container of a task on a GPU container instance (EC2 capacity provider with
  GPU instances; Fargate has no GPUs).

The locally used DefaultRunLauncher ignores all of them, so these tags are harmless on one box.
"""

from __future__ import annotations

import json

MODEL_CACHE_MOUNT = "/models"
MODEL_CACHE_CLAIM = "ultraedit-model-cache"

K8S_GPU_CONFIG = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "4", "memory": "24Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
        },
        "env": [
            {"name": "HF_HOME", "value": f"{MODEL_CACHE_MOUNT}/huggingface"},
            {"name": "TORCH_HOME", "value": f"{MODEL_CACHE_MOUNT}/torch"},
        ],
        "volume_mounts": [{"name": "model-cache", "mount_path": MODEL_CACHE_MOUNT}],
    },
    "pod_spec_config": {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "node_selector": {"ultraedit/node-pool": "gpu"},
        "volumes": [{"name": "model-cache", "persistent_volume_claim": {"claim_name": MODEL_CACHE_CLAIM}}],
    },
}


ECS_GPU_TASK_OVERRIDES = {
    "containerOverrides": [
        {
            "name": "run",
            "resourceRequirements": [{"type": "GPU", "value": "1"}],
            "environment": [
                {"name": "HF_HOME", "value": f"{MODEL_CACHE_MOUNT}/huggingface"},
                {"name": "TORCH_HOME", "value": f"{MODEL_CACHE_MOUNT}/torch"},
            ],
        }
    ]
}

# Tag values must be strings: the structured ones are JSON.
GPU_OP_TAGS: dict[str, str] = {
    "dagster-k8s/config": json.dumps(K8S_GPU_CONFIG),
    "ecs/cpu": "4096",
    "ecs/memory": "30720",
    "ecs/task_overrides": json.dumps(ECS_GPU_TASK_OVERRIDES),
    "ultraedit/resources": "gpu",
}
