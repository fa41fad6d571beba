"""Offline evaluation on the challenge's HELM tasks: HELM's prompts, instance selection and metrics on local data."""
