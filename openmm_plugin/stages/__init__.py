"""CLI stages, each a frozen config plus a ``run_*`` function; import the one you need by module.

Stages are listed by module, not re-exported: each pulls in OpenMM, torch and its own dependencies, and the CLI
imports only the stage it runs.
"""

__all__ = ["analyze", "bias", "check", "corpus", "demo", "finetune", "iterate", "iterate_report", "label", "learn",
           "learn_data", "learn_fit", "learn_report", "pretrain", "simulate"]
