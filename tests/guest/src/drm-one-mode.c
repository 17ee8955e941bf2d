/*
 * drm-one-mode.so — LD_PRELOAD for DRM clients that pick the connector's largest
 * mode (glmark2-es2-drm 2023.01 does): drmModeGetConnector() then lists one mode
 * only, the one DRM_ONE_MODE=WxH names, else the connector's preferred mode.
 * Without it glmark2 renders at whatever the EDID lists last (1920x1200 with
 * scanway, 5120x2160 with QEMU's own virtio-gpu), so two hosts would not draw the
 * same picture.  Connectors without such a mode are left as they are.
 * Built on the host by build-rootfs-3d.sh (same glibc and libdrm soname as the rootfs).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <xf86drmMode.h>

drmModeConnectorPtr drmModeGetConnector(int fd, uint32_t connector_id)
{
	static drmModeConnectorPtr (*real)(int, uint32_t);
	drmModeConnectorPtr c;
	unsigned int w = 0, h = 0;
	const char *want = getenv("DRM_ONE_MODE");
	int i, pick = -1;

	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "drmModeGetConnector");
	if (!real)
		return NULL;
	c = real(fd, connector_id);
	if (!c || c->count_modes < 2)
		return c;
	if (!want || sscanf(want, "%ux%u", &w, &h) != 2)
		w = h = 0;
	for (i = 0; i < c->count_modes && pick < 0; i++) {
		const drmModeModeInfo *m = &c->modes[i];
		if (w ? (m->hdisplay == w && m->vdisplay == h) : (m->type & DRM_MODE_TYPE_PREFERRED) != 0)
			pick = i;
	}
	if (pick < 0)
		return c;
	if (pick > 0) {
		drmModeModeInfo t = c->modes[0];
		c->modes[0] = c->modes[pick];
		c->modes[pick] = t;
	}
	/* drmModeFreeConnector() frees the modes array whatever count_modes says */
	c->count_modes = 1;
	return c;
}
