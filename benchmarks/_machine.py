"""Describe the machine a benchmark ran on, so figures are never quoted without it."""

from __future__ import annotations

import os
import platform

import torch


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    parts = [f"{platform.system()} {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    return "; ".join(parts)
