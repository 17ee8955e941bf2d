/*
 * gpu-test: tiny static DRM/KMS client for virtio-gpu test guests.
 *
 * Raw DRM ioctls only (uapi headers from libdrm-dev, no libdrm library), so
 * `gcc -static` gives a self-contained binary that runs from an initramfs.
 *
 *   gpu-test info                       list connectors / modes
 *   gpu-test pattern   [opts]           colour bars on output 0, hold
 *   gpu-test animate   [opts]           N frames via page flips (2 buffers)
 *   gpu-test animate-dirty [opts]       N frames via DIRTYFB on 1 buffer
 *   gpu-test multihead [opts]           pattern on every connected output
 *   gpu-test fbpattern [opts]           pattern via /dev/fb0 (fbdev emulation)
 *   gpu-test cursor    [opts]           pattern, then a hardware cursor (DRM_IOCTL_MODE_CURSOR2)
 *   gpu-test follow    [opts]           pattern on output 0 in its preferred mode, redrawn
 *                                       at the new size whenever the host changes that mode
 *   gpu-test input     [opts]           pattern, then every /dev/input/event* event printed
 *   gpu-test flood     [opts]           pattern, then TRANSFER_TO_HOST ioctls (no fence, no
 *                                       wait) as fast as the queue takes them, until killed
 *
 * opts: --mode WxH  --frames N  --hold SECS (0 = forever, -1 = exit at once)
 *       --card PATH --output I (connector index for pattern/animate)
 *       --buffers N (animate: pre-rendered buffers, 2..8)  --redraw (animate:
 *       draw every frame instead of flipping between pre-rendered buffers)
 *       --start-pause MS (animate: idle MS milliseconds after printing
 *       GUEST-ANIMATE-START, before the first frame; lets a host benchmark
 *       sample its CPU counters while the GPU path is quiet)  --still (animate: every
 *       buffer holds frame 0, so the picture is exact whenever it is looked at)
 *       --interval MS (animate: frame f is flipped no earlier than MS * f after the first)
 *
 * The picture (keep in sync with check-pattern.py):
 *   8 vertical bars  white yellow cyan green magenta red blue black
 *     bar index b = ((x + shift) mod W) * 8 / W, shift = (frame*16) mod W;
 *     odd heads use 7-b (reversed order)
 *   64x64 black/white checkerboard of 8x8 cells at (16 + 80*head, 16):
 *     white where ((dx>>3) ^ (dy>>3)) & 1, else black
 *   1-pixel orange (#FF8000) border on the outermost rows/columns
 *     (border wins over marker, marker over bars)
 *
 * Serial-console lines meant for the host harness all start with "GUEST-".
 */
#include "gpu-test.h"

const char *card_path = "/dev/dri/card0";
int opt_w, opt_h, opt_frames = 300, opt_hold = 0, opt_output = 0;

/* ---- tests ------------------------------------------------------------- */

static int t_info(void)
{
	struct output outs[MAX_OUT];
	int fd = open_card();
	probe_all(fd, outs);
	return 0;
}

static int t_pattern(void)
{
	struct output outs[MAX_OUT];
	struct buffer b;
	int fd = open_card();
	struct output *o = show_pattern(fd, outs, &b);
	int head = (int)(o - outs);
	LOG("GUEST-PATTERN-READY %dx%d head=%d output=%s\n", b.w, b.h, head, o->name);
	hold();
	return 0;
}

/* The cursor test (keep in sync with cursor_argb() in tests/e2e/run.py).
 *
 * Picture: 64x64 ARGB8888, premultiplied alpha (what DRM cursor planes take):
 *   x,y < 48:           opaque; 1-px white frame (x or y = 0 or 47), inside 0x123456,
 *                       the hot spot pixel (CURSOR_HOT_X, CURSOR_HOT_Y) 0xABCDEF
 *   52 <= x,y < 60:     translucent: alpha 0x80, premultiplied red 0x80 (0x80800000)
 *   everything else:    fully transparent (0x00000000)
 * Linux creates every dumb buffer as a B8G8R8X8 resource; the cursor plane still reads it
 * as ARGB8888, so a host must take the cursor's fourth byte as alpha.
 *
 * Placement, with the legacy cursor ioctl (the kernel turns it into an atomic update of the
 * CRTC's cursor plane; its x,y are the plane's, i.e. the image's top-left corner, and the
 * hot spot goes separately as the plane's HOTSPOT_X/Y, which virtio-gpu forwards):
 *   1. DRM_MODE_CURSOR_BO | DRM_MODE_CURSOR_MOVE at (CURSOR_FROM_X, CURSOR_FROM_Y):
 *      virtio-gpu sends UPDATE_CURSOR (image, hot spot, position)
 *   2. DRM_MODE_CURSOR_MOVE to (CURSOR_X - CURSOR_HOT_X, CURSOR_Y - CURSOR_HOT_Y), so the
 *      hot spot is at (CURSOR_X, CURSOR_Y): virtio-gpu sends MOVE_CURSOR
 * READY line: GUEST-CURSOR-READY WxH head=N x=CURSOR_X y=CURSOR_Y hot=HX,HY size=64x64
 *             plane=PX,PY from=FX,FY  (x,y = where the hot spot is; plane = image top-left) */
#define CURSOR_SIZE 64
#define CURSOR_HOT_X 10
#define CURSOR_HOT_Y 12
#define CURSOR_X 400
#define CURSOR_Y 300
#define CURSOR_FROM_X 700
#define CURSOR_FROM_Y 500

static uint32_t cursor_argb(int x, int y)
{
	if (x < 48 && y < 48) {
		if (x == 0 || y == 0 || x == 47 || y == 47)
			return 0xFFFFFFFFu;
		if (x == CURSOR_HOT_X && y == CURSOR_HOT_Y)
			return 0xFFABCDEFu;
		return 0xFF123456u;
	}
	if (x >= 52 && x < 60 && y >= 52 && y < 60)
		return 0x80800000u;
	return 0;
}

static void cursor_ioctl(int fd, struct drm_mode_cursor2 *c, const char *what)
{
	if (xioctl(fd, DRM_IOCTL_MODE_CURSOR2, c))
		DIE("MODE_CURSOR2 (%s): %s\n", what, strerror(errno));
}

static int t_cursor(void)
{
	struct output outs[MAX_OUT];
	struct buffer b;
	int fd = open_card();
	struct output *o = show_pattern(fd, outs, &b);
	int head = (int)(o - outs);

	struct drm_mode_create_dumb cd = { .width = CURSOR_SIZE, .height = CURSOR_SIZE, .bpp = 32 };
	if (xioctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, &cd))
		DIE("CREATE_DUMB cursor: %s\n", strerror(errno));
	struct drm_mode_map_dumb md = { .handle = cd.handle };
	if (xioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, &md))
		DIE("MAP_DUMB cursor: %s\n", strerror(errno));
	uint8_t *map = mmap(NULL, cd.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, md.offset);
	if (map == MAP_FAILED)
		DIE("mmap cursor: %s\n", strerror(errno));
	for (int y = 0; y < CURSOR_SIZE; y++) {
		uint32_t *row = (uint32_t *)(map + (size_t)y * cd.pitch);
		for (int x = 0; x < CURSOR_SIZE; x++)
			row[x] = cursor_argb(x, y);
	}

	/* 1. image + hot spot, at a first position: UPDATE_CURSOR */
	struct drm_mode_cursor2 set = {
		.flags = DRM_MODE_CURSOR_BO | DRM_MODE_CURSOR_MOVE,
		.crtc_id = o->crtc_id,
		.x = CURSOR_FROM_X,
		.y = CURSOR_FROM_Y,
		.width = CURSOR_SIZE,
		.height = CURSOR_SIZE,
		.handle = cd.handle,
		.hot_x = CURSOR_HOT_X,
		.hot_y = CURSOR_HOT_Y,
	};
	cursor_ioctl(fd, &set, "set");
	/* 2. move only: MOVE_CURSOR, the image's top-left so that the hot spot is at CURSOR_X,Y */
	struct drm_mode_cursor2 move = {
		.flags = DRM_MODE_CURSOR_MOVE,
		.crtc_id = o->crtc_id,
		.x = CURSOR_X - CURSOR_HOT_X,
		.y = CURSOR_Y - CURSOR_HOT_Y,
	};
	cursor_ioctl(fd, &move, "move");
	/* The kernel waited for the cursor image's TRANSFER_TO_HOST_2D (fenced) before sending
	 * UPDATE_CURSOR; the cursor queue itself has no fence, so the host allows a moment. */
	LOG("GUEST-CURSOR-READY %dx%d head=%d x=%d y=%d hot=%d,%d size=%dx%d plane=%d,%d from=%d,%d\n",
	    b.w, b.h, head, CURSOR_X, CURSOR_Y, CURSOR_HOT_X, CURSOR_HOT_Y, CURSOR_SIZE, CURSOR_SIZE,
	    CURSOR_X - CURSOR_HOT_X, CURSOR_Y - CURSOR_HOT_Y, CURSOR_FROM_X, CURSOR_FROM_Y);
	hold();
	return 0;
}

static int t_multihead(void)
{
	struct output outs[MAX_OUT];
	struct buffer bufs[MAX_OUT];
	char summary[512] = "";
	int fd = open_card();
	int n = probe_all(fd, outs), lit = 0;
	for (int i = 0; i < n; i++) {
		struct output *o = &outs[i];
		if (!o->connected || !o->have_mode || !o->crtc_id) {
			LOG("GUEST-MULTIHEAD skip %s (%s)\n", o->name,
			    o->connected ? "no mode/crtc" : "disconnected");
			continue;
		}
		create_buffer(fd, o->mode.hdisplay, o->mode.vdisplay, &bufs[i]);
		draw(bufs[i].map, bufs[i].pitch, bufs[i].w, bufs[i].h, i, 0);
		set_crtc(fd, o, &bufs[i]);
		dirty_fb(fd, &bufs[i]);
		lit++;
		size_t l = strlen(summary);
		snprintf(summary + l, sizeof(summary) - l, " %d:%dx%d", i, bufs[i].w, bufs[i].h);
	}
	if (vgpu_sync(fd))
		LOG("GUEST-WARN sync: %s\n", strerror(errno));
	LOG("GUEST-MULTIHEAD-READY heads=%d%s\n", lit, summary);
	hold();
	return lit ? 0 : 1;
}

/* follow: the picture on the chosen output in the connector's preferred mode (the mode
 * flagged DRM_MODE_TYPE_PREFERRED, else the first; --mode and video= are not used),
 * kept in that mode: when the host changes the display (virtio-gpu's display-change
 * event: Linux re-reads GET_DISPLAY_INFO and the EDIDs, then sends a hotplug uevent),
 * a new dumb buffer of the new size gets the picture, SETCRTC shows it (DIRTYFB, fenced
 * sync), the old buffer is freed.  The connector is re-probed on every kernel uevent
 * (NETLINK_KOBJECT_UEVENT) and every FOLLOW_POLL_MS besides.
 *   GUEST-MODE WxH               after each mode set, the first one included
 *   GUEST-PATTERN-READY WxH head=N output=NAME   once, after the first
 *   GUEST-HOTPLUG n=K            on each drm hotplug uevent (K counts them)
 * A disconnected connector or one without modes leaves the picture as it is. */
#define FOLLOW_POLL_MS 200

/* the connector's preferred mode (else its first); 0 when it is disconnected or has
 * no modes.  count_modes = 0 makes the kernel probe the connector again. */
static int preferred_mode(int fd, uint32_t conn_id, struct drm_mode_modeinfo *out)
{
	struct drm_mode_modeinfo *modes = NULL;
	int found = 0;
	for (int tries = 0; tries < 5; tries++) {
		struct drm_mode_get_connector c = { .connector_id = conn_id };
		if (xioctl(fd, DRM_IOCTL_MODE_GETCONNECTOR, &c))
			DIE("GETCONNECTOR: %s\n", strerror(errno));
		if (c.connection != 1 || c.count_modes == 0)
			break;
		uint32_t nm = c.count_modes;
		free(modes);
		modes = calloc(nm, sizeof(*modes));
		struct drm_mode_get_connector c2 = {
			.connector_id = conn_id, .count_modes = nm, .modes_ptr = (uintptr_t)modes,
		};
		if (xioctl(fd, DRM_IOCTL_MODE_GETCONNECTOR, &c2))
			DIE("GETCONNECTOR(2): %s\n", strerror(errno));
		if (c2.count_modes > nm)
			continue; /* the list grew in between: again */
		if (c2.connection != 1 || c2.count_modes == 0)
			break;
		int pick = 0;
		for (int k = 0; k < (int)c2.count_modes; k++)
			if (modes[k].type & DRM_MODE_TYPE_PREFERRED) {
				pick = k;
				break;
			}
		*out = modes[pick];
		found = 1;
		break;
	}
	free(modes);
	return found;
}

/* a NETLINK_KOBJECT_UEVENT socket (the kernel's broadcast group), or -1 */
static int uevent_socket(void)
{
	int s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
	if (s < 0)
		return -1;
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = 1 };
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa))) {
		close(s);
		return -1;
	}
	return s;
}

/* drain the socket; returns how many of the messages were drm hotplug events */
static int read_uevents(int s)
{
	static char buf[8192];
	int hotplugs = 0;
	for (;;) {
		ssize_t n = recv(s, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			return hotplugs;
		buf[n] = 0;
		int drm = 0, hp = 0;
		/* "ACTION@DEVPATH\0KEY=VALUE\0..." */
		for (char *p = buf; p < buf + n; p += strlen(p) + 1) {
			if (!strcmp(p, "SUBSYSTEM=drm"))
				drm = 1;
			else if (!strcmp(p, "HOTPLUG=1"))
				hp = 1;
		}
		hotplugs += drm && hp;
	}
}

static void show_mode(int fd, struct output *o, struct buffer *b, int head)
{
	create_buffer(fd, o->mode.hdisplay, o->mode.vdisplay, b);
	draw(b->map, b->pitch, b->w, b->h, head, 0);
	set_crtc(fd, o, b);
	if (dirty_fb(fd, b))
		LOG("GUEST-WARN DIRTYFB: %s\n", strerror(errno));
	if (vgpu_sync(fd))
		LOG("GUEST-WARN sync: %s\n", strerror(errno));
	LOG("GUEST-MODE %dx%d\n", b->w, b->h);
}

static int t_follow(void)
{
	struct output outs[MAX_OUT];
	struct buffer cur, next;
	int fd = open_card();
	if (opt_w)
		LOG("GUEST-WARN follow: --mode %dx%d not used (follows the preferred mode)\n",
		    opt_w, opt_h);
	int n = probe_all(fd, outs);
	struct output *o = pick_output(outs, n);
	int head = (int)(o - outs);
	struct drm_mode_modeinfo m;
	if (preferred_mode(fd, o->conn_id, &m))
		o->mode = m;
	int us = uevent_socket();
	if (us < 0)
		LOG("GUEST-WARN follow: no uevent socket (%s), polling only\n", strerror(errno));
	show_mode(fd, o, &cur, head);
	LOG("GUEST-PATTERN-READY %dx%d head=%d output=%s\n", cur.w, cur.h, head, o->name);

	double deadline = hold_deadline();
	int hotplugs = 0;
	for (;;) {
		int t = hold_timeout(deadline, FOLLOW_POLL_MS);
		if (t == -2)
			break;
		struct pollfd p = { .fd = us, .events = POLLIN };
		if (poll(&p, us >= 0 ? 1 : 0, t) > 0 && (p.revents & POLLIN)) {
			int h = read_uevents(us);
			for (int i = 0; i < h; i++)
				LOG("GUEST-HOTPLUG n=%d\n", ++hotplugs);
		}
		if (!preferred_mode(fd, o->conn_id, &m))
			continue;
		if (m.hdisplay == cur.w && m.vdisplay == cur.h)
			continue;
		o->mode = m;
		show_mode(fd, o, &next, head);
		destroy_buffer(fd, &cur);
		cur = next;
	}
	return 0;
}

static int wait_flip(int fd)
{
	char ev[1024];
	struct pollfd p = { .fd = fd, .events = POLLIN };
	for (;;) {
		int r = poll(&p, 1, 5000);
		if (r <= 0)
			return -1;
		ssize_t len = read(fd, ev, sizeof(ev));
		if (len <= 0)
			return -1;
		for (ssize_t off = 0; off + (ssize_t)sizeof(struct drm_event) <= len;) {
			struct drm_event *e = (struct drm_event *)(ev + off);
			if (e->type == DRM_EVENT_FLIP_COMPLETE)
				return 0;
			off += e->length;
		}
	}
}

/* animate: page flips between pre-rendered buffers (default; no drawing in
 * the timed loop, so the rate is bound by the virtio-gpu path and the host),
 * or --redraw: draw frame f into the back buffer every frame (guest-CPU bound
 * under TCG).  animate-dirty: one buffer, redraw + DIRTYFB every frame.
 * The picture left on screen is frame `picture` (check-pattern.py --frame). */
static int opt_buffers = 2, opt_redraw = 0, opt_start_pause_ms = 0, opt_still = 0, opt_interval_ms = 0;

static int t_animate(int use_flip)
{
	struct output outs[MAX_OUT];
	struct buffer b[8];
	int fd = open_card();
	int n = probe_all(fd, outs);
	struct output *o = pick_output(outs, n);
	int head = (int)(o - outs);
	int redraw = use_flip ? opt_redraw : 1;
	int nbuf = use_flip ? opt_buffers : 1;
	int W = o->mode.hdisplay, H = o->mode.vdisplay, frames = opt_frames;
	for (int i = 0; i < nbuf; i++) {
		create_buffer(fd, W, H, &b[i]);
		draw(b[i].map, b[i].pitch, W, H, head, opt_still ? 0 : i);
	}
	set_crtc(fd, o, &b[0]);
	int can_sync = vgpu_sync(fd) == 0;
	if (!can_sync)
		LOG("GUEST-WARN sync unsupported (%s); fps excludes queue drain\n", strerror(errno));
	/* everything before this line (buffers drawn, first SETCRTC synced) is
	 * set-up; the timed frames start after the pause */
	LOG("GUEST-ANIMATE-START %dx%d frames=%d pause_ms=%d\n", W, H, frames - 1, opt_start_pause_ms);
	if (opt_start_pause_ms > 0)
		usleep((useconds_t)opt_start_pause_ms * 1000);

	double t0 = now(), tdraw = 0;
	int f, picture = 0;
	for (f = 1; f < frames; f++) {
		struct buffer *cur = &b[f % nbuf];
		if (opt_interval_ms > 0) {
			double wait = t0 + f * opt_interval_ms / 1000.0 - now();
			if (wait > 0)
				usleep((useconds_t)(wait * 1e6));
		}
		if (redraw) {
			double d0 = now();
			draw(cur->map, cur->pitch, W, H, head, opt_still ? 0 : f);
			tdraw += now() - d0;
			picture = opt_still ? 0 : f;
		} else {
			picture = opt_still ? 0 : f % nbuf;
		}
		if (use_flip) {
			struct drm_mode_crtc_page_flip pf = {
				.crtc_id = o->crtc_id, .fb_id = cur->fb_id,
				.flags = DRM_MODE_PAGE_FLIP_EVENT, .user_data = f,
			};
			if (xioctl(fd, DRM_IOCTL_MODE_PAGE_FLIP, &pf))
				DIE("PAGE_FLIP frame %d: %s\n", f, strerror(errno));
			if (wait_flip(fd))
				DIE("no flip event for frame %d\n", f);
		} else if (dirty_fb(fd, cur)) {
			DIE("DIRTYFB frame %d: %s\n", f, strerror(errno));
		}
	}
	if (can_sync)
		vgpu_sync(fd);
	double dt = now() - t0;
	int nf = frames - 1;
	LOG("GUEST-ANIMATE-DONE %dx%d mode=%s%s buffers=%d frames=%d seconds=%.3f fps=%.1f "
	    "draw_ms=%.2f mpix_s=%.1f synced=%d picture=%d head=%d\n",
	    W, H, use_flip ? "pageflip" : "dirtyfb", redraw ? "+redraw" : "", nbuf, nf, dt,
	    nf > 0 ? nf / dt : 0.0, nf > 0 ? tdraw * 1000 / nf : 0.0,
	    nf > 0 ? (double)W * H * nf / dt / 1e6 : 0.0, can_sync, picture, head);
	hold();
	return 0;
}

static int t_fbpattern(void)
{
	int fd = -1;
	for (int i = 0; i < 100 && fd < 0; i++) {
		fd = open("/dev/fb0", O_RDWR);
		if (fd < 0)
			usleep(100000);
	}
	if (fd < 0)
		DIE("open /dev/fb0: %s\n", strerror(errno));
	struct fb_var_screeninfo v;
	struct fb_fix_screeninfo fx;
	if (ioctl(fd, FBIOGET_VSCREENINFO, &v) || ioctl(fd, FBIOGET_FSCREENINFO, &fx))
		DIE("FBIOGET: %s\n", strerror(errno));
	if (v.bits_per_pixel != 32)
		DIE("fb0 is %u bpp, need 32\n", v.bits_per_pixel);
	size_t len = (size_t)fx.line_length * v.yres_virtual;
	uint8_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		DIE("mmap fb0: %s\n", strerror(errno));
	/* fbcon draws on the same buffer; keep the cursor off (vt.global_cursor_default=0) */
	draw(map + (size_t)v.yoffset * fx.line_length, fx.line_length, v.xres, v.yres, 0, 0);
	msync(map, len, MS_SYNC);
	/* fbdev emulation flushes damage from a worker; give it a moment */
	usleep(200000);
	LOG("GUEST-FBPATTERN-READY %ux%u\n", v.xres, v.yres);
	hold();
	return 0;
}

/* flood: the pattern, then TRANSFER_TO_HOST of the whole buffer and of small boxes (no fence,
 * so nothing waits for the host: the queue is kept as full as the guest can fill it) until
 * killed. Prints GUEST-FLOOD-READY WxH once the pattern is up, then GUEST-FLOOD n=N every
 * 2 s (ioctls so far). The picture stays the pattern: the data transferred is unchanged. */
static int t_flood(void)
{
	struct output outs[MAX_OUT];
	struct buffer b;
	int fd = open_card();
	struct output *o = show_pattern(fd, outs, &b);
	LOG("GUEST-FLOOD-READY %dx%d head=%d output=%s\n", b.w, b.h, (int)(o - outs), o->name);
	double next = now() + 2;
	for (unsigned long n = 1;; n++) {
		/* every 16th the whole frame, else a 64x16 box (a text line's worth) */
		int full = n % 16 == 0;
		struct drm_virtgpu_3d_transfer_to_host t = {
			.bo_handle = b.handle,
			.box = { .x = full ? 0 : (n * 64) % (b.w - 64), .y = full ? 0 : (n * 16) % (b.h - 16),
				 .w = full ? b.w : 64, .h = full ? b.h : 16, .d = 1 },
		};
		t.offset = t.box.y * b.pitch + t.box.x * 4;
		if (xioctl(fd, DRM_IOCTL_VIRTGPU_TRANSFER_TO_HOST, &t))
			DIE("TRANSFER_TO_HOST %lu: %s\n", n, strerror(errno));
		if (now() >= next) {
			LOG("GUEST-FLOOD n=%lu\n", n);
			next += 2;
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s info|pattern|animate|animate-dirty|multihead|fbpattern|cursor|follow|input|flood"
			" [--mode WxH] [--frames N] [--hold S] [--card PATH] [--output I]"
			" [--buffers N] [--redraw] [--start-pause MS] [--still] [--interval MS]\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
			if (sscanf(argv[++i], "%dx%d", &opt_w, &opt_h) != 2)
				opt_w = opt_h = 0;
		} else if (!strcmp(argv[i], "--frames") && i + 1 < argc) {
			opt_frames = atoi(argv[++i]);
			if (opt_frames < 2)
				opt_frames = 2;
		} else if (!strcmp(argv[i], "--hold") && i + 1 < argc) {
			opt_hold = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--card") && i + 1 < argc) {
			card_path = argv[++i];
		} else if (!strcmp(argv[i], "--output") && i + 1 < argc) {
			opt_output = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--buffers") && i + 1 < argc) {
			opt_buffers = atoi(argv[++i]);
			if (opt_buffers < 2)
				opt_buffers = 2;
			if (opt_buffers > 8)
				opt_buffers = 8;
		} else if (!strcmp(argv[i], "--start-pause") && i + 1 < argc) {
			opt_start_pause_ms = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--redraw")) {
			opt_redraw = 1;
		} else if (!strcmp(argv[i], "--still")) {
			opt_still = 1;
		} else if (!strcmp(argv[i], "--interval") && i + 1 < argc) {
			opt_interval_ms = atoi(argv[++i]);
		} else {
			fprintf(stderr, "unknown option %s\n", argv[i]);
			return 2;
		}
	}
	const char *t = argv[1];
	if (!strcmp(t, "info"))
		return t_info();
	if (!strcmp(t, "pattern"))
		return t_pattern();
	if (!strcmp(t, "animate"))
		return t_animate(1);
	if (!strcmp(t, "animate-dirty"))
		return t_animate(0);
	if (!strcmp(t, "multihead"))
		return t_multihead();
	if (!strcmp(t, "fbpattern"))
		return t_fbpattern();
	if (!strcmp(t, "cursor"))
		return t_cursor();
	if (!strcmp(t, "follow"))
		return t_follow();
	if (!strcmp(t, "input"))
		return t_input();
	if (!strcmp(t, "flood"))
		return t_flood();
	fprintf(stderr, "unknown test %s\n", t);
	return 2;
}
