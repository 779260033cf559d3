"""Shared foundations every stage uses: ids, imaging, devices, retries, settings, profiles, partitions,
deploy tags, the LLM client, shared rows and resources."""
