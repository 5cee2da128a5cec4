# Devices of the patched QEMU that qemu-patch/build-qemu builds (configure
# --without-default-devices --with-devices-x86_64=vcounter): the microvm and q35
# machines, virtio over MMIO and PCI, virtio-serial and virtio-net. Enough to
# boot and live-migrate a Linux guest; a distribution build keeps its own list.
CONFIG_MICROVM=y
CONFIG_Q35=y
CONFIG_VIRTIO_MMIO=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_SERIAL=y
CONFIG_VIRTIO_NET=y
