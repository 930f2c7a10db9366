"""Red's Kubernetes operator: reconciles Federations into KubeRay RayClusters and RayJobs."""
