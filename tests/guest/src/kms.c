/* kms.c: the test picture and the KMS plumbing of gpu-test (raw DRM ioctls). */
#include "gpu-test.h"

static const uint32_t BARS[8] = {
	0xFFFFFF, 0xFFFF00, 0x00FFFF, 0x00FF00,
	0xFF00FF, 0xFF0000, 0x0000FF, 0x000000,
};
#define BORDER 0xFF8000u
#define MARK_SIZE 64
#define MARK_CELL 8

int xioctl(int fd, unsigned long req, void *arg)
{
	int r;
	do {
		r = ioctl(fd, req, arg);
	} while (r == -1 && (errno == EINTR || errno == EAGAIN));
	return r;
}

double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the test picture -------------------------------------------------- */

void draw(uint8_t *map, uint32_t pitch, int W, int H, int head, int frame)
{
	uint32_t *row = malloc((size_t)W * 4);
	int shift = (int)(((long)frame * 16) % W);
	int x, y;

	for (x = 0; x < W; x++) {
		int b = (int)((long)((x + shift) % W) * 8 / W);
		if (head & 1)
			b = 7 - b;
		row[x] = BARS[b];
	}
	for (y = 0; y < H; y++)
		memcpy(map + (size_t)y * pitch, row, (size_t)W * 4);

	int mx = 16 + 80 * head, my = 16;
	for (y = my; y < my + MARK_SIZE && y < H; y++) {
		uint32_t *p = (uint32_t *)(map + (size_t)y * pitch);
		for (x = mx; x < mx + MARK_SIZE && x < W; x++)
			p[x] = ((((x - mx) / MARK_CELL) ^ ((y - my) / MARK_CELL)) & 1)
				? 0xFFFFFF : 0x000000;
	}
	for (x = 0; x < W; x++) {
		((uint32_t *)map)[x] = BORDER;
		((uint32_t *)(map + (size_t)(H - 1) * pitch))[x] = BORDER;
	}
	for (y = 0; y < H; y++) {
		uint32_t *p = (uint32_t *)(map + (size_t)y * pitch);
		p[0] = BORDER;
		p[W - 1] = BORDER;
	}
	free(row);
}

/* ---- KMS plumbing ------------------------------------------------------ */

static struct drm_mode_card_res res;
static uint32_t *crtc_ids, *conn_ids, *enc_ids, *fb_ids;

void get_resources(int fd)
{
	for (;;) {
		struct drm_mode_card_res r = {0};
		if (xioctl(fd, DRM_IOCTL_MODE_GETRESOURCES, &r))
			DIE("GETRESOURCES: %s\n", strerror(errno));
		crtc_ids = calloc(r.count_crtcs + 1, 4);
		conn_ids = calloc(r.count_connectors + 1, 4);
		enc_ids = calloc(r.count_encoders + 1, 4);
		fb_ids = calloc(r.count_fbs + 1, 4);
		struct drm_mode_card_res r2 = r;
		r2.crtc_id_ptr = (uintptr_t)crtc_ids;
		r2.connector_id_ptr = (uintptr_t)conn_ids;
		r2.encoder_id_ptr = (uintptr_t)enc_ids;
		r2.fb_id_ptr = (uintptr_t)fb_ids;
		if (xioctl(fd, DRM_IOCTL_MODE_GETRESOURCES, &r2))
			DIE("GETRESOURCES(2): %s\n", strerror(errno));
		if (r2.count_crtcs <= r.count_crtcs && r2.count_connectors <= r.count_connectors &&
		    r2.count_encoders <= r.count_encoders && r2.count_fbs <= r.count_fbs) {
			res = r2;
			return;
		}
		free(crtc_ids); free(conn_ids); free(enc_ids); free(fb_ids);
	}
}

const char *conn_type_name(uint32_t t)
{
	switch (t) {
	case DRM_MODE_CONNECTOR_VIRTUAL: return "Virtual";
	case DRM_MODE_CONNECTOR_VGA: return "VGA";
	case DRM_MODE_CONNECTOR_HDMIA: return "HDMI-A";
	case DRM_MODE_CONNECTOR_DisplayPort: return "DP";
	case DRM_MODE_CONNECTOR_eDP: return "eDP";
	default: return "Unknown";
	}
}

/* probe connector i, pick a mode (requested WxH, else preferred, else first) */
void probe_output(int fd, int i, struct output *o, uint32_t *used_crtcs)
{
	struct drm_mode_get_connector c;
	struct drm_mode_modeinfo *modes = NULL;
	uint32_t *encs = NULL;
	int tries;

	memset(o, 0, sizeof(*o));
	o->conn_id = conn_ids[i];
	for (tries = 0; tries < 5; tries++) {
		memset(&c, 0, sizeof(c));
		c.connector_id = o->conn_id;
		if (xioctl(fd, DRM_IOCTL_MODE_GETCONNECTOR, &c)) /* count_modes=0 => probe */
			DIE("GETCONNECTOR: %s\n", strerror(errno));
		uint32_t nm = c.count_modes, ne = c.count_encoders;
		free(modes); free(encs);
		modes = calloc(nm + 1, sizeof(*modes));
		encs = calloc(ne + 1, 4);
		memset(&c, 0, sizeof(c));
		c.connector_id = o->conn_id;
		c.count_modes = nm;
		c.modes_ptr = (uintptr_t)modes;
		c.count_encoders = ne;
		c.encoders_ptr = (uintptr_t)encs;
		if (nm == 0) {
			/* avoid a second probe: pass a dummy 1-entry buffer */
			c.count_modes = 1;
		}
		if (xioctl(fd, DRM_IOCTL_MODE_GETCONNECTOR, &c))
			DIE("GETCONNECTOR(2): %s\n", strerror(errno));
		if (c.count_modes <= (nm ? nm : 1) && c.count_encoders <= ne)
			break;
	}
	snprintf(o->name, sizeof(o->name), "%s-%u", conn_type_name(c.connector_type),
		 c.connector_type_id);
	o->connected = (c.connection == 1);
	o->nmodes = c.count_modes;

	/* mode: --mode WxH, else the kernel command line's video= mode (USERDEF),
	 * else the preferred one, else the first one not above 1920x1200 */
	int pick = -1, k;
	for (k = 0; k < (int)c.count_modes && opt_w; k++)
		if (modes[k].hdisplay == opt_w && modes[k].vdisplay == opt_h) {
			if (pick < 0 || (modes[k].type & DRM_MODE_TYPE_PREFERRED))
				pick = k;
		}
	if (pick < 0 && opt_w && c.count_modes)
		LOG("GUEST-WARN %s has no %dx%d mode, using default choice\n", o->name, opt_w, opt_h);
	for (k = 0; k < (int)c.count_modes && pick < 0; k++)
		if (modes[k].type & DRM_MODE_TYPE_USERDEF)
			pick = k;
	for (k = 0; k < (int)c.count_modes && pick < 0; k++)
		if (modes[k].type & DRM_MODE_TYPE_PREFERRED)
			pick = k;
	for (k = 0; k < (int)c.count_modes && pick < 0; k++)
		if (modes[k].hdisplay <= 1920 && modes[k].vdisplay <= 1200)
			pick = k;
	if (pick < 0 && c.count_modes)
		pick = 0;
	if (pick >= 0) {
		o->mode = modes[pick];
		o->have_mode = 1;
	}

	/* crtc: first one allowed by an encoder that is not taken yet */
	for (k = 0; k < (int)c.count_encoders && !o->crtc_id; k++) {
		struct drm_mode_get_encoder e = { .encoder_id = encs[k] };
		if (xioctl(fd, DRM_IOCTL_MODE_GETENCODER, &e))
			continue;
		for (int j = 0; j < (int)res.count_crtcs; j++)
			if ((e.possible_crtcs & (1u << j)) && !(*used_crtcs & (1u << j))) {
				o->crtc_id = crtc_ids[j];
				*used_crtcs |= 1u << j;
				break;
			}
	}
	free(modes);
	free(encs);
}

void print_output(int i, struct output *o)
{
	LOG("GUEST-CONNECTOR %d %s id=%u %s modes=%d crtc=%u mode=%dx%d@%u\n", i, o->name,
	    o->conn_id, o->connected ? "connected" : "disconnected", o->nmodes, o->crtc_id,
	    o->have_mode ? o->mode.hdisplay : 0, o->have_mode ? o->mode.vdisplay : 0,
	    o->have_mode ? o->mode.vrefresh : 0);
}

void create_buffer(int fd, int w, int h, struct buffer *b)
{
	struct drm_mode_create_dumb cd = { .width = w, .height = h, .bpp = 32 };
	if (xioctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, &cd))
		DIE("CREATE_DUMB %dx%d: %s\n", w, h, strerror(errno));
	struct drm_mode_fb_cmd f = {
		.width = w, .height = h, .pitch = cd.pitch, .bpp = 32, .depth = 24,
		.handle = cd.handle,
	};
	if (xioctl(fd, DRM_IOCTL_MODE_ADDFB, &f))
		DIE("ADDFB: %s\n", strerror(errno));
	struct drm_mode_map_dumb md = { .handle = cd.handle };
	if (xioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, &md))
		DIE("MAP_DUMB: %s\n", strerror(errno));
	b->map = mmap(NULL, cd.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, md.offset);
	if (b->map == MAP_FAILED)
		DIE("mmap: %s\n", strerror(errno));
	b->handle = cd.handle;
	b->fb_id = f.fb_id;
	b->pitch = cd.pitch;
	b->size = cd.size;
	b->w = w;
	b->h = h;
}

void set_crtc(int fd, struct output *o, struct buffer *b)
{
	struct drm_mode_crtc sc = {
		.set_connectors_ptr = (uintptr_t)&o->conn_id,
		.count_connectors = 1,
		.crtc_id = o->crtc_id,
		.fb_id = b->fb_id,
		.mode_valid = 1,
		.mode = o->mode,
	};
	if (xioctl(fd, DRM_IOCTL_MODE_SETCRTC, &sc))
		DIE("SETCRTC %s: %s\n", o->name, strerror(errno));
}

int dirty_fb(int fd, struct buffer *b)
{
	struct drm_mode_fb_dirty_cmd d = { .fb_id = b->fb_id }; /* no clips = whole fb */
	return xioctl(fd, DRM_IOCTL_MODE_DIRTYFB, &d);
}

/* Sync point: virtio-gpu has no fence on 2D dumb-buffer updates, so create a
 * tiny resource with a fence and wait for it; the host handles the control
 * queue in order, so this returns once all earlier commands are done. */
int vgpu_sync(int fd)
{
	struct drm_virtgpu_resource_create rc = {
		.target = 2, .format = 2 /* B8G8R8X8 */, .bind = 2,
		.width = 16, .height = 16, .depth = 1, .array_size = 1,
	};
	if (xioctl(fd, DRM_IOCTL_VIRTGPU_RESOURCE_CREATE, &rc))
		return -1;
	struct drm_virtgpu_3d_wait w = { .handle = rc.bo_handle };
	int r = xioctl(fd, DRM_IOCTL_VIRTGPU_WAIT, &w);
	struct drm_gem_close gc = { .handle = rc.bo_handle };
	xioctl(fd, DRM_IOCTL_GEM_CLOSE, &gc);
	return r;
}

void destroy_buffer(int fd, struct buffer *b)
{
	munmap(b->map, b->size);
	if (xioctl(fd, DRM_IOCTL_MODE_RMFB, &b->fb_id))
		LOG("GUEST-WARN RMFB: %s\n", strerror(errno));
	struct drm_mode_destroy_dumb dd = { .handle = b->handle };
	if (xioctl(fd, DRM_IOCTL_MODE_DESTROY_DUMB, &dd))
		LOG("GUEST-WARN DESTROY_DUMB: %s\n", strerror(errno));
	memset(b, 0, sizeof(*b));
}

/* --hold as a deadline for the tests that keep working while they hold
 * (follow, input): 0 = never, < 0 = now */
double hold_deadline(void)
{
	return opt_hold == 0 ? 0 : now() + (opt_hold > 0 ? opt_hold : 0);
}

/* poll() timeout in ms: at most `step_ms`, less when the deadline is nearer;
 * -2 once it has passed */
int hold_timeout(double deadline, int step_ms)
{
	if (deadline == 0)
		return step_ms;
	double left = deadline - now();
	if (left <= 0)
		return -2;
	return left * 1000 < step_ms ? (int)(left * 1000) + 1 : step_ms;
}

void hold(void)
{
	if (opt_hold < 0)
		return;
	if (opt_hold == 0)
		for (;;)
			pause();
	sleep(opt_hold);
}

int open_card(void)
{
	int fd = -1;
	for (int i = 0; i < 100 && fd < 0; i++) {
		fd = open(card_path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			usleep(100000);
	}
	if (fd < 0)
		DIE("open %s: %s\n", card_path, strerror(errno));
	struct drm_set_client_cap cap = { .capability = DRM_CLIENT_CAP_UNIVERSAL_PLANES, .value = 0 };
	xioctl(fd, DRM_IOCTL_SET_CLIENT_CAP, &cap);
	return fd;
}

int probe_all(int fd, struct output *outs)
{
	uint32_t used = 0;
	get_resources(fd);
	int n = res.count_connectors < MAX_OUT ? res.count_connectors : MAX_OUT;
	for (int i = 0; i < n; i++) {
		probe_output(fd, i, &outs[i], &used);
		print_output(i, &outs[i]);
	}
	LOG("GUEST-OUTPUTS connectors=%u crtcs=%u\n", res.count_connectors, res.count_crtcs);
	return n;
}

struct output *pick_output(struct output *outs, int n)
{
	if (opt_output < n && outs[opt_output].have_mode && outs[opt_output].crtc_id)
		return &outs[opt_output];
	for (int i = 0; i < n; i++)
		if (outs[i].connected && outs[i].have_mode && outs[i].crtc_id)
			return &outs[i];
	DIE("no usable connected output\n");
}

/* The picture on the chosen output: buffer, SETCRTC, DIRTYFB, then a fenced sync so the
 * host has consumed it.  Returns the output. */
struct output *show_pattern(int fd, struct output *outs, struct buffer *b)
{
	int n = probe_all(fd, outs);
	struct output *o = pick_output(outs, n);
	create_buffer(fd, o->mode.hdisplay, o->mode.vdisplay, b);
	draw(b->map, b->pitch, b->w, b->h, (int)(o - outs), 0);
	set_crtc(fd, o, b);
	if (dirty_fb(fd, b))
		LOG("GUEST-WARN DIRTYFB: %s\n", strerror(errno));
	if (vgpu_sync(fd))
		LOG("GUEST-WARN sync: %s\n", strerror(errno));
	return o;
}
