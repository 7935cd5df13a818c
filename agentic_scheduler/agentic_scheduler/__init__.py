"""A CloudAI placement agent: reads cluster state over the MasterAgent gRPC API
and places queued tasks with a GPU-memory-aware best-fit policy."""
