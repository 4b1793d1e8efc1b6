"""Real guests: the QMP bridge (``bridge``) that applies the twin's commands to QEMU/KVM VMs and
reports their memory, and the lab (``lab``, ``guest``, ``assets``) of Linux guests under QEMU built
from Debian's packages. ``dmtwin lab ...`` and ``dmtwin bridge`` are in ``cli``; docs/real-guests.md."""
