"""`GET /v1/agent/host` body: host facts from psutil in gopsutil's lower-camel shape (layer 4).

Contract: `host_info(data_dir)` returns {Memory, CPU, Host, Disk, CollectionTime, Errors}; a fact
that cannot be read is reported in `Errors`, never as a failure of the request.
"""

from __future__ import annotations

import os
import platform
import socket
import time

import psutil


async def host_info(data_dir: str | None) -> dict:
    errors: list[str] = []
    memory = psutil.virtual_memory()
    disk_path = data_dir if data_dir and os.path.isdir(data_dir) else "/"
    try:
        usage = psutil.disk_usage(disk_path)
        disk = {"path": disk_path, "total": usage.total, "free": usage.free, "used": usage.used,
                "usedPercent": usage.percent}
    except OSError as exc:
        disk = {}
        errors.append(f"disk: {exc}")
    frequency = psutil.cpu_freq()
    boot = int(psutil.boot_time())
    uname = platform.uname()
    return {
        "Memory": {"total": memory.total, "available": memory.available, "used": memory.used,
                   "usedPercent": memory.percent, "free": memory.free},
        "CPU": [{"cpu": i, "vendorId": "", "modelName": uname.processor or uname.machine,
                 "mhz": frequency.current if frequency else 0, "cores": 1}
                for i in range(psutil.cpu_count() or 1)],
        "Host": {"hostname": socket.gethostname(), "uptime": int(time.time()) - boot, "bootTime": boot,
                 "procs": len(psutil.pids()), "os": uname.system.lower(), "platform": uname.system.lower(),
                 "kernelVersion": uname.release, "kernelArch": uname.machine},
        "Disk": disk,
        "CollectionTime": time.time_ns(),
        "Errors": errors,
    }
