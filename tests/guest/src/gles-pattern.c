/*
 * gles-pattern — the kit's known picture drawn through GLES2 on GBM/KMS (so, in a virgl
 * guest, by the host's virglrenderer) and put on the first connected output, for a
 * pixel-exact check of the 3D scanout path on the host (tests/guest/check-pattern.py).
 *
 *   gles-pattern [--mode WxH] [--hold S] [--frames N] [--spin]
 *
 * The picture is the one gpu-test.c draws for head 0, frame 0 (8 vertical bars, a 64x64
 * black/white checkerboard at 16,16, a 1-px orange border), painted with glScissor +
 * glClear only, so every colour is exact. Prints
 *   GUEST-GLES-READY WxH renderer="..."
 * then holds the picture (S seconds; 0 = forever). With --frames N it first redraws and
 * page-flips N times and prints GUEST-GLES-DONE frames=N seconds=S fps=F renderer="...".
 * With --spin it keeps redrawing and page-flipping the same picture after the READY line,
 * until killed (a host fault campaign kills it mid-SUBMIT_3D with fences pending, and any
 * screenshot is still the exact picture).
 */
#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <GLES2/gl2.h>
#include <fcntl.h>
#include <gbm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xf86drm.h>
#include <xf86drmMode.h>

#define DIE(...) do { printf("GUEST-ERROR " __VA_ARGS__); exit(1); } while (0)

static const uint32_t BARS[8] = { 0xFFFFFF, 0xFFFF00, 0x00FFFF, 0x00FF00, 0xFF00FF, 0xFF0000, 0x0000FF, 0x000000 };
static const uint32_t BORDER = 0xFF8000;
static int W, H;

/* Fill the top-down rectangle x,y,w,h with rgb (GL's origin is bottom-left). */
static void fill(int x, int y, int w, int h, uint32_t rgb)
{
	if (w <= 0 || h <= 0)
		return;
	glScissor(x, H - (y + h), w, h);
	glClearColor(((rgb >> 16) & 0xff) / 255.0f, ((rgb >> 8) & 0xff) / 255.0f, (rgb & 0xff) / 255.0f, 1.0f);
	glClear(GL_COLOR_BUFFER_BIT);
}

static void draw(void)
{
	glEnable(GL_SCISSOR_TEST);
	/* bar b covers the x with x * 8 / W == b: from ceil(b * W / 8) */
	for (int b = 0; b < 8; b++) {
		int x0 = (b * W + 7) / 8, x1 = ((b + 1) * W + 7) / 8;
		fill(x0, 0, x1 - x0, H, BARS[b]);
	}
	for (int cy = 0; cy < 8; cy++)
		for (int cx = 0; cx < 8; cx++)
			fill(16 + cx * 8, 16 + cy * 8, 8, 8, ((cx ^ cy) & 1) ? 0xFFFFFF : 0x000000);
	fill(0, 0, W, 1, BORDER);
	fill(0, H - 1, W, 1, BORDER);
	fill(0, 0, 1, H, BORDER);
	fill(W - 1, 0, 1, H, BORDER);
	glDisable(GL_SCISSOR_TEST);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void flip_done(int fd, unsigned seq, unsigned s, unsigned us, void *data)
{
	(void)fd, (void)seq, (void)s, (void)us;
	*(int *)data = 0;
}

static uint32_t fb_of(int fd, struct gbm_bo *bo)
{
	uint32_t fb;
	if (drmModeAddFB(fd, W, H, 24, 32, gbm_bo_get_stride(bo), gbm_bo_get_handle(bo).u32, &fb))
		DIE("drmModeAddFB failed\n");
	return fb;
}

/* what one page flip touches: the card, its CRTC, the EGL surface and the buffer on screen */
struct screen {
	int fd;
	uint32_t crtc;
	EGLDisplay dpy;
	EGLSurface es;
	struct gbm_surface *surf;
	struct gbm_bo *bo;
	uint32_t fb;
};

/* one frame: redraw, swap, page-flip to it and wait for the flip */
static void flip_one(struct screen *s)
{
	drmEventContext ev = { .version = 2, .page_flip_handler = flip_done };
	draw();
	eglSwapBuffers(s->dpy, s->es);
	struct gbm_bo *next = gbm_surface_lock_front_buffer(s->surf);
	uint32_t next_fb = fb_of(s->fd, next);
	int pending = 1;
	if (drmModePageFlip(s->fd, s->crtc, next_fb, DRM_MODE_PAGE_FLIP_EVENT, &pending))
		DIE("drmModePageFlip failed\n");
	while (pending)
		drmHandleEvent(s->fd, &ev);
	/* the previous buffer is off screen now: free its framebuffer and hand it back */
	drmModeRmFB(s->fd, s->fb);
	gbm_surface_release_buffer(s->surf, s->bo);
	s->bo = next;
	s->fb = next_fb;
}

int main(int argc, char **argv)
{
	int want_w = 0, want_h = 0, hold = 0, frames = 0, spin = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mode") && i + 1 < argc)
			sscanf(argv[++i], "%dx%d", &want_w, &want_h);
		else if (!strcmp(argv[i], "--hold") && i + 1 < argc)
			hold = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--frames") && i + 1 < argc)
			frames = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--spin"))
			spin = 1;
	}
	int fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		DIE("open /dev/dri/card0 failed\n");
	drmModeRes *res = drmModeGetResources(fd);
	if (!res)
		DIE("drmModeGetResources failed\n");
	drmModeConnector *conn = NULL;
	for (int i = 0; i < res->count_connectors && !conn; i++) {
		drmModeConnector *c = drmModeGetConnector(fd, res->connectors[i]);
		if (c && c->connection == DRM_MODE_CONNECTED && c->count_modes > 0)
			conn = c;
		else if (c)
			drmModeFreeConnector(c);
	}
	if (!conn)
		DIE("no connected connector\n");
	drmModeModeInfo mode = conn->modes[0];
	for (int i = 0; i < conn->count_modes; i++) {
		drmModeModeInfo *m = &conn->modes[i];
		if (want_w ? (m->hdisplay == want_w && m->vdisplay == want_h) : (m->type & DRM_MODE_TYPE_PREFERRED)) {
			mode = *m;
			break;
		}
	}
	W = mode.hdisplay, H = mode.vdisplay;
	uint32_t crtc = res->crtcs[0];

	struct gbm_device *gbm = gbm_create_device(fd);
	struct gbm_surface *surf = gbm ? gbm_surface_create(gbm, W, H, GBM_FORMAT_XRGB8888,
						    GBM_BO_USE_SCANOUT | GBM_BO_USE_RENDERING) : NULL;
	if (!surf)
		DIE("GBM surface %dx%d failed\n", W, H);
	PFNEGLGETPLATFORMDISPLAYEXTPROC get_display =
		(PFNEGLGETPLATFORMDISPLAYEXTPROC)eglGetProcAddress("eglGetPlatformDisplayEXT");
	EGLDisplay dpy = get_display ? get_display(EGL_PLATFORM_GBM_KHR, gbm, NULL) : eglGetDisplay((EGLNativeDisplayType)gbm);
	if (!eglInitialize(dpy, NULL, NULL) || !eglBindAPI(EGL_OPENGL_ES_API))
		DIE("EGL init failed\n");
	const EGLint cattr[] = { EGL_SURFACE_TYPE, EGL_WINDOW_BIT, EGL_RED_SIZE, 8, EGL_GREEN_SIZE, 8,
				 EGL_BLUE_SIZE, 8, EGL_ALPHA_SIZE, 0, EGL_RENDERABLE_TYPE, EGL_OPENGL_ES2_BIT, EGL_NONE };
	EGLConfig cfgs[64], cfg = NULL;
	EGLint n = 0;
	eglChooseConfig(dpy, cattr, cfgs, 64, &n);
	for (int i = 0; i < n && !cfg; i++) {
		EGLint id;
		if (eglGetConfigAttrib(dpy, cfgs[i], EGL_NATIVE_VISUAL_ID, &id) && id == GBM_FORMAT_XRGB8888)
			cfg = cfgs[i];
	}
	if (!cfg)
		DIE("no XRGB8888 EGL config\n");
	const EGLint ctx_attr[] = { EGL_CONTEXT_CLIENT_VERSION, 2, EGL_NONE };
	EGLContext ctx = eglCreateContext(dpy, cfg, EGL_NO_CONTEXT, ctx_attr);
	EGLSurface es = eglCreateWindowSurface(dpy, cfg, (EGLNativeWindowType)surf, NULL);
	if (ctx == EGL_NO_CONTEXT || es == EGL_NO_SURFACE || !eglMakeCurrent(dpy, es, es, ctx))
		DIE("EGL context/surface failed\n");
	const char *renderer = (const char *)glGetString(GL_RENDERER);

	glViewport(0, 0, W, H);
	draw();
	eglSwapBuffers(dpy, es);
	struct gbm_bo *bo = gbm_surface_lock_front_buffer(surf);
	uint32_t fb = fb_of(fd, bo);
	if (drmModeSetCrtc(fd, crtc, fb, 0, 0, &conn->connector_id, 1, &mode))
		DIE("drmModeSetCrtc failed\n");

	struct screen scr = { fd, crtc, dpy, es, surf, bo, fb };
	if (frames > 0) {
		double t0 = now();
		for (int f = 0; f < frames; f++)
			flip_one(&scr);
		double s = now() - t0;
		printf("GUEST-GLES-DONE frames=%d seconds=%.3f fps=%.1f renderer=\"%s\"\n", frames, s, frames / s, renderer);
	}
	printf("GUEST-GLES-READY %dx%d renderer=\"%s\"\n", W, H, renderer);
	if (spin)
		for (;;)
			flip_one(&scr);
	if (hold > 0)
		sleep(hold);
	else
		for (;;)
			pause();
	return 0;
}
