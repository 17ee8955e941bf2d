/*
 * bad-streams — malformed virgl command streams and 3D commands, in the classes of
 * virglrenderer's published CVEs and its fuzzers' findings, sent from a guest through the
 * virtio-gpu kernel driver (raw DRM ioctls), for the host's bad-stream campaign
 * (tests/e2e/cases_hostile.py). Runs in the 3D root filesystem.
 *
 *   bad-streams [--only NAME[,NAME...]] [--list]
 *
 * Each case runs in a child process with a DRM file of its own (so a virgl context of its
 * own, torn down when it exits), which first creates a 64x64 texture and a 4 KiB buffer, sends
 * the case's commands, then a fenced valid stream and waits for its fence (10 s). Lines:
 *   GUEST-BAD-START name=NAME
 *   GUEST-BAD-END name=NAME errors=E fence=ok|timeout|none rc=R   E: ioctls the kernel refused
 *   GUEST-BAD-HEALTH name=NAME ok|FAILED (why)
 * the health check being a fresh context's clear of a texture to red, read back exact, so the
 * host's renderer still renders after the case. Finally GUEST-BAD-DONE cases=N healthy=H.
 *
 * Classes (see virglrenderer's CVE list): out-of-range and foreign handles, oversized shader
 * and constant buffers, bad strides/levels/boxes in transfers (to and from the host), huge
 * sample counts and sizes in resource creation, bad levels/layers in surfaces and views,
 * vertex elements past PIPE_MAX_ATTRIBS, bad sub-contexts, truncated and unknown commands,
 * draws with nothing bound, queries writing outside their buffer, many contexts.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <drm.h>
#include <virtgpu_drm.h>

#define LOG(...) do { printf(__VA_ARGS__); fflush(stdout); } while (0)

/* virgl protocol (virglrenderer src/virgl_protocol.h): header len << 16 | obj << 8 | opcode */
#define HDR(op, obj, len) ((uint32_t)(len) << 16 | (uint32_t)(obj) << 8 | (uint32_t)(op))
enum { NOP = 0, CREATE_OBJECT = 1, BIND_OBJECT = 2, DESTROY_OBJECT = 3, SET_FRAMEBUFFER_STATE = 5,
       SET_VERTEX_BUFFERS = 6, CLEAR = 7, DRAW_VBO = 8, RESOURCE_INLINE_WRITE = 9,
       SET_SAMPLER_VIEWS = 10, SET_CONSTANT_BUFFER = 12, BLIT = 16, RESOURCE_COPY_REGION = 17,
       BEGIN_QUERY = 19, END_QUERY = 20, GET_QUERY_RESULT = 21, SET_STREAMOUT_TARGETS = 25,
       SET_UNIFORM_BUFFER = 27, SET_SUB_CTX = 28, CREATE_SUB_CTX = 29, DESTROY_SUB_CTX = 30,
       BIND_SHADER = 31, SET_SHADER_IMAGES = 35, LAUNCH_GRID = 37, GET_QUERY_RESULT_QBO = 42,
       END_TRANSFERS = 44 };
enum { OBJ_BLEND = 1, OBJ_SHADER = 4, OBJ_VERTEX_ELEMENTS = 5, OBJ_SAMPLER_VIEW = 6,
       OBJ_SURFACE = 8, OBJ_QUERY = 9, OBJ_STREAMOUT_TARGET = 10 };
enum { TARGET_BUFFER = 0, TARGET_2D = 2, TARGET_3D = 3, TARGET_2D_ARRAY = 7 };
enum { FMT_B8G8R8X8 = 2, BIND_RENDER_TARGET = 1 << 1, BIND_SAMPLER_VIEW = 1 << 3,
       BIND_VERTEX_BUFFER = 1 << 4, BIND_CONSTANT_BUFFER = 1 << 6, CLEAR_COLOR0 = 1 << 2 };

/* drm_virtgpu_3d_transfer_to/from_host with the stride fields newer kernels take (the ioctl
 * number carries the size: the kernel zero-fills what an older header leaves out) */
struct transfer {
	uint32_t bo_handle;
	struct drm_virtgpu_3d_box box;
	uint32_t level, offset, stride, layer_stride;
};
#define IOCTL_TO_HOST DRM_IOWR(DRM_COMMAND_BASE + DRM_VIRTGPU_TRANSFER_TO_HOST, struct transfer)
#define IOCTL_FROM_HOST DRM_IOWR(DRM_COMMAND_BASE + DRM_VIRTGPU_TRANSFER_FROM_HOST, struct transfer)

/* what a case works with: its DRM file, a 64x64 texture and a 4 KiB buffer (a buffer takes
 * exactly one bind flag) */
struct env {
	int fd;
	uint32_t tex_bo, tex, buf_bo, buf;
	int errors; /* ioctls refused by the kernel */
};

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;
	do
		r = ioctl(fd, req, arg);
	while (r == -1 && (errno == EINTR || errno == EAGAIN));
	return r;
}

static int card(void)
{
	int fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		LOG("GUEST-ERROR open /dev/dri/card0: %s\n", strerror(errno));
		exit(2);
	}
	return fd;
}

static int res_create(struct env *e, uint32_t target, uint32_t format, uint32_t bind, uint32_t w, uint32_t h,
		      uint32_t depth, uint32_t array_size, uint32_t last_level, uint32_t samples, uint32_t *bo,
		      uint32_t *res)
{
	uint64_t size = (uint64_t)w * h * 4;
	struct drm_virtgpu_resource_create rc = {
		.target = target, .format = format, .bind = bind, .width = w, .height = h, .depth = depth,
		.array_size = array_size, .last_level = last_level, .nr_samples = samples,
		.size = size > 1 << 20 || size == 0 ? 4096 : (uint32_t)size, .stride = w * 4,
	};
	if (xioctl(e->fd, DRM_IOCTL_VIRTGPU_RESOURCE_CREATE, &rc)) {
		e->errors++;
		return -1;
	}
	if (bo)
		*bo = rc.bo_handle;
	if (res)
		*res = rc.res_handle;
	return 0;
}

/* SUBMIT_3D of `n` dwords referencing the env's two resources; with `fence`, its fence fd */
static int submit(struct env *e, const uint32_t *cmd, uint32_t n, int *fence)
{
	uint32_t bos[2] = { e->tex_bo, e->buf_bo };
	struct drm_virtgpu_execbuffer eb = {
		.flags = fence ? VIRTGPU_EXECBUF_FENCE_FD_OUT : 0,
		.size = n * 4, .command = (uintptr_t)cmd, .bo_handles = (uintptr_t)bos,
		.num_bo_handles = e->tex_bo && e->buf_bo ? 2 : 0, .fence_fd = -1,
	};
	if (xioctl(e->fd, DRM_IOCTL_VIRTGPU_EXECBUFFER, &eb)) {
		e->errors++;
		return -1;
	}
	if (fence)
		*fence = eb.fence_fd;
	return 0;
}

static void transfer(struct env *e, int to_host, uint32_t bo, uint32_t x, uint32_t y, uint32_t z, uint32_t w,
		     uint32_t h, uint32_t d, uint32_t level, uint32_t offset, uint32_t stride, uint32_t layer_stride)
{
	struct transfer t = { .bo_handle = bo, .box = { x, y, z, w, h, d }, .level = level, .offset = offset,
			      .stride = stride, .layer_stride = layer_stride };
	if (xioctl(e->fd, to_host ? IOCTL_TO_HOST : IOCTL_FROM_HOST, &t))
		e->errors++;
}

/* a fenced valid stream (one NOP) and its fence: "ok", "timeout" or "none" (not submitted) */
static const char *barrier(struct env *e)
{
	uint32_t nop[] = { HDR(NOP, 0, 0) };
	int fence = -1;
	if (submit(e, nop, 1, &fence) || fence < 0)
		return "none";
	struct pollfd p = { .fd = fence, .events = POLLIN };
	int r = poll(&p, 1, 10000);
	close(fence);
	return r == 1 ? "ok" : "timeout";
}

#define SEND(...) do { const uint32_t c_[] = { __VA_ARGS__ }; submit(e, c_, sizeof(c_) / 4, NULL); } while (0)

/* ------------------------------------------------------------------ cases */
static void res_huge_samples(struct env *e)
{
	res_create(e, TARGET_2D, FMT_B8G8R8X8, BIND_RENDER_TARGET, 64, 64, 1, 1, 0, 1u << 20, NULL, NULL);
	res_create(e, TARGET_2D, FMT_B8G8R8X8, BIND_RENDER_TARGET, 64, 64, 1, 1, 0, 255, NULL, NULL);
	res_create(e, TARGET_2D, FMT_B8G8R8X8, BIND_SAMPLER_VIEW, 64, 64, 1, 1, 5, 16, NULL, NULL);
}

static void res_huge_sizes(struct env *e)
{
	res_create(e, TARGET_2D, FMT_B8G8R8X8, BIND_RENDER_TARGET, 16384, 16384, 1, 1, 0, 0, NULL, NULL);
	res_create(e, TARGET_2D, FMT_B8G8R8X8, BIND_RENDER_TARGET, 0xffffffff, 0xffffffff, 1, 1, 0, 0, NULL, NULL);
	res_create(e, TARGET_3D, FMT_B8G8R8X8, BIND_SAMPLER_VIEW, 2048, 2048, 1u << 16, 1, 0, 0, NULL, NULL);
	res_create(e, TARGET_2D_ARRAY, FMT_B8G8R8X8, BIND_SAMPLER_VIEW, 64, 64, 1, 1u << 16, 0, 0, NULL, NULL);
	res_create(e, TARGET_2D, FMT_B8G8R8X8, BIND_SAMPLER_VIEW, 64, 64, 1, 1, 31, 0, NULL, NULL);
	res_create(e, TARGET_BUFFER, 0, BIND_VERTEX_BUFFER, 0x7fffffff, 1, 1, 1, 0, 0, NULL, NULL);
	res_create(e, TARGET_2D, FMT_B8G8R8X8, BIND_RENDER_TARGET, 0, 0, 0, 0, 0, 0, NULL, NULL);
}

static void res_bad_enums(struct env *e)
{
	res_create(e, 99, FMT_B8G8R8X8, BIND_RENDER_TARGET, 64, 64, 1, 1, 0, 0, NULL, NULL);
	res_create(e, TARGET_2D, 0xffff, BIND_RENDER_TARGET, 64, 64, 1, 1, 0, 0, NULL, NULL);
	res_create(e, TARGET_2D, FMT_B8G8R8X8, 0xffffffff, 64, 64, 1, 1, 0, 0, NULL, NULL);
}

static void transfer_bad_stride(struct env *e)
{
	for (int to = 0; to < 2; to++) {
		transfer(e, to, e->tex_bo, 0, 0, 0, 64, 64, 1, 0, 0, 0xfffffff0, 0xffffffff);
		transfer(e, to, e->tex_bo, 0, 0, 0, 64, 64, 1, 0, 0, 1, 1);
		transfer(e, to, e->tex_bo, 0, 0, 0, 64, 64, 1, 0, 0, 1u << 20, 0);
	}
}

static void transfer_bad_level(struct env *e)
{
	for (int to = 0; to < 2; to++) {
		transfer(e, to, e->tex_bo, 0, 0, 0, 64, 64, 1, 20, 0, 0, 0);
		transfer(e, to, e->tex_bo, 0, 0, 0, 1, 1, 1, 0xffffffff, 0, 0, 0);
	}
}

static void transfer_box_outside(struct env *e)
{
	for (int to = 0; to < 2; to++) {
		transfer(e, to, e->tex_bo, 60, 0, 0, 64, 64, 1, 0, 0, 0, 0);
		transfer(e, to, e->tex_bo, 0x7fffffff, 0x7fffffff, 0, 2, 2, 1, 0, 0, 0, 0);
		transfer(e, to, e->tex_bo, 0, 0, 5, 64, 64, 1, 0, 0, 0, 0);
		transfer(e, to, e->tex_bo, 0, 0, 0, 64, 0xffffffff, 0xffffffff, 0, 0, 0, 0);
		transfer(e, to, e->tex_bo, 0, 0, 0, 64, 64, 1, 0, 64 * 64 * 4 - 4, 0, 0);
		transfer(e, to, e->buf_bo, 0xfffff000, 0, 0, 0x2000, 1, 1, 0, 0, 0, 0);
	}
}

static void stream_bad_handles(struct env *e)
{
	SEND(HDR(CREATE_OBJECT, OBJ_SAMPLER_VIEW, 6), 7, 0x7fffffff, FMT_B8G8R8X8, 0, 0, 0);
	SEND(HDR(CREATE_OBJECT, OBJ_SAMPLER_VIEW, 6), 8, e->tex + 1000, FMT_B8G8R8X8, 0, 0, 0);
	SEND(HDR(SET_SAMPLER_VIEWS, 0, 4), 0, 0, 0xdeadbeef, 99);
	SEND(HDR(BIND_OBJECT, OBJ_BLEND, 1), 12345);
	SEND(HDR(SET_FRAMEBUFFER_STATE, 0, 10), 8, 0xffffffff, 1, 2, 3, 4, 5, 6, 7, 0xffffffff);
	SEND(HDR(SET_VERTEX_BUFFERS, 0, 3), 16, 0, 0xffffffff);
	SEND(HDR(DESTROY_OBJECT, OBJ_SURFACE, 1), 0);
	SEND(HDR(BIND_SHADER, 0, 2), 0xffffffff, 99);
	SEND(HDR(CREATE_OBJECT, 0xff, 1), 1);
}

static void shader_oversized(struct env *e)
{
	static const char text[] = "FRAG\nDCL OUT[0], COLOR\nIMM[0] FLT32 { 1.0, 0.0, 0.0, 1.0 }\n"
				   "MOV OUT[0], IMM[0]\nEND\n";
	uint32_t cmd[6 + sizeof(text) / 4 + 1];
	uint32_t tdw = (uint32_t)(sizeof(text) + 3) / 4;
	/* declared length 2 GiB and 2^31 tokens, text of a few dozen bytes; then a continuation
	 * at an offset far past anything sent */
	cmd[0] = HDR(CREATE_OBJECT, OBJ_SHADER, 5 + tdw);
	cmd[1] = 1, cmd[2] = 1 /* fragment */, cmd[3] = 0x7fffffff, cmd[4] = 0x7fffffff, cmd[5] = 0;
	memset(&cmd[6], 0, tdw * 4);
	memcpy(&cmd[6], text, sizeof(text));
	submit(e, cmd, 6 + tdw, NULL);
	cmd[3] = (1u << 31) | 0x7ffffff0;
	submit(e, cmd, 6 + tdw, NULL);
	/* a second shader: right length, 2^31 tokens */
	cmd[1] = 2, cmd[3] = sizeof(text);
	submit(e, cmd, 6 + tdw, NULL);
	SEND(HDR(BIND_SHADER, 0, 2), 1, 1);
	SEND(HDR(BIND_SHADER, 0, 2), 2, 1);
}

static void shader_bad_tgsi(struct env *e)
{
	enum { N = 16000 };
	static uint32_t cmd[6 + N];
	cmd[0] = HDR(CREATE_OBJECT, OBJ_SHADER, 5 + N);
	cmd[1] = 3, cmd[2] = 1, cmd[3] = N * 4, cmd[4] = 300, cmd[5] = 0;
	/* one identifier of 64000 characters, no NUL (parse_identifier's stack buffer) */
	memcpy(&cmd[6], "FRAG\nDCL ", 9);
	memset((char *)&cmd[6] + 9, 'A', N * 4 - 9);
	submit(e, cmd, 6 + N, NULL);
	static const char *texts[] = {
		"FRAG\nDCL IN[4294967295], GENERIC[0]\nEND\n",
		"FRAG\nDCL TEMP[0..2147483647]\nMOV OUT[0], TEMP[2147483647]\nEND\n",
		"VERT\nPROPERTY NEXT_SHADER 99\nIMM[0] FLT32 { 1e999, nan, -inf, 0x }\nEND\n",
		"COMP\nDCL SVIEW[9999], 2D, FLOAT\nTEX OUT[0], IN[0], SAMP[9999], 2D\nEND\n",
		"",
	};
	for (unsigned i = 0; i < sizeof(texts) / sizeof(*texts); i++) {
		uint32_t c[6 + 32] = { 0 };
		size_t len = strlen(texts[i]) + 1;
		uint32_t tdw = (uint32_t)(len + 3) / 4;
		c[0] = HDR(CREATE_OBJECT, OBJ_SHADER, 5 + tdw);
		c[1] = 10 + i, c[2] = i % 6, c[3] = (uint32_t)len, c[4] = 300, c[5] = 0;
		memcpy(&c[6], texts[i], len);
		submit(e, c, 6 + tdw, NULL);
	}
}

static void vertex_elements_many(struct env *e)
{
	enum { N = 64 }; /* PIPE_MAX_ATTRIBS is 32 */
	uint32_t cmd[2 + 4 * N];
	cmd[0] = HDR(CREATE_OBJECT, OBJ_VERTEX_ELEMENTS, 1 + 4 * N);
	cmd[1] = 1;
	for (int i = 0; i < N; i++) {
		cmd[2 + 4 * i] = 0xfffffff0, cmd[3 + 4 * i] = 0xffffffff;
		cmd[4 + 4 * i] = 0xffff, cmd[5 + 4 * i] = 0xffff;
	}
	submit(e, cmd, 2 + 4 * N, NULL);
	SEND(HDR(BIND_OBJECT, OBJ_VERTEX_ELEMENTS, 1), 1);
}

static void constant_buffer_oversized(struct env *e)
{
	enum { N = 65000 };
	static uint32_t cmd[3 + N];
	cmd[0] = HDR(SET_CONSTANT_BUFFER, 0, 2 + N);
	cmd[1] = 1, cmd[2] = 0xffffffff;
	submit(e, cmd, 3 + N, NULL);
	cmd[1] = 99, cmd[2] = 0;
	submit(e, cmd, 3 + N, NULL);
	SEND(HDR(SET_UNIFORM_BUFFER, 0, 5), 1, 1000, 0xfffffff0, 0xffffffff, e->buf);
	SEND(HDR(SET_UNIFORM_BUFFER, 0, 5), 1, 0, 0xfffffff0, 0xffffffff, e->buf);
}

static void draw_nothing_bound(struct env *e)
{
	SEND(HDR(DRAW_VBO, 0, 12), 0x7fffffff, 0x7fffffff, 4, 1, 0xffffffff, 0x80000000, 0, 1, 0xffffffff, 0,
	     0xffffffff, 0);
	SEND(HDR(DRAW_VBO, 0, 12), 0, 3, 99, 0, 1, 0, 0xffffffff, 0, 0, 0, 0, 0x7fffffff);
	SEND(HDR(DRAW_VBO, 0, 20), 0, 3, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, e->buf, 0xfffffff0, 0xffffffff,
	     0xffffffff, 0xfffffff0, e->buf);
}

static void sub_ctx_bad(struct env *e)
{
	SEND(HDR(DESTROY_SUB_CTX, 0, 1), 0);
	SEND(HDR(SET_SUB_CTX, 0, 1), 0xffffffff);
	SEND(HDR(CREATE_SUB_CTX, 0, 1), 0);
	SEND(HDR(CREATE_SUB_CTX, 0, 1), 1);
	SEND(HDR(CREATE_SUB_CTX, 0, 1), 1);
	SEND(HDR(SET_SUB_CTX, 0, 1), 1);
	SEND(HDR(DESTROY_SUB_CTX, 0, 1), 1);
	SEND(HDR(DRAW_VBO, 0, 12), 0, 3, 4, 0, 1, 0, 0, 0, 0, 0, 2, 0);
	SEND(HDR(CREATE_SUB_CTX, 0, 1), 0xffffffff);
	SEND(HDR(SET_SUB_CTX, 0, 1), 0xffffffff);
	SEND(HDR(DESTROY_SUB_CTX, 0, 1), 0xffffffff);
}

static void surface_bad_level(struct env *e)
{
	SEND(HDR(CREATE_OBJECT, OBJ_SURFACE, 5), 2, e->tex, FMT_B8G8R8X8, 255, 2000u << 16 | 1000);
	SEND(HDR(CREATE_OBJECT, OBJ_SAMPLER_VIEW, 6), 3, e->tex, FMT_B8G8R8X8, 0xffff0000, 0xff00ff, 0);
	SEND(HDR(CREATE_OBJECT, OBJ_SURFACE, 5), 4, e->buf, FMT_B8G8R8X8, 0xfffffff0, 0xffffffff);
	SEND(HDR(SET_FRAMEBUFFER_STATE, 0, 3), 1, 0, 2);
	SEND(HDR(CLEAR, 0, 8), CLEAR_COLOR0, 0, 0, 0, 0, 0, 0, 0);
	SEND(HDR(SET_FRAMEBUFFER_STATE, 0, 3), 1, 0, 4);
	SEND(HDR(CLEAR, 0, 8), CLEAR_COLOR0, 0, 0, 0, 0, 0, 0, 0);
	SEND(HDR(SET_SAMPLER_VIEWS, 0, 3), 1, 0, 3);
}

static void blit_bad(struct env *e)
{
	SEND(HDR(BLIT, 0, 21), 0xff | 3 << 8, 0, 0, e->tex, 50, 0xffff, 0xffffffff, 0, 0, 0x7fffffff, 0x7fffffff,
	     0x7fffffff, e->tex, 0, FMT_B8G8R8X8, 0, 0, 0, 64, 64, 1);
	SEND(HDR(BLIT, 0, 21), 0xff, 0, 0, e->tex, 0, FMT_B8G8R8X8, 0, 0, 0, 64, 64, 1, e->buf, 99, 0xffff, 0, 0, 0,
	     0xffffffff, 0xffffffff, 0xffffffff);
	SEND(HDR(RESOURCE_COPY_REGION, 0, 13), e->tex, 99, 0x7fffffff, 0, 0, e->tex, 0, 0, 0, 0, 0xffffffff,
	     0xffffffff, 0xffffffff);
	SEND(HDR(RESOURCE_COPY_REGION, 0, 13), e->buf, 0, 0xfffff000, 0, 0, e->buf, 0, 0, 0, 0, 0x2000, 1, 1);
}

static void clear_no_framebuffer(struct env *e)
{
	SEND(HDR(CLEAR, 0, 8), 0xffffffff, 0, 0, 0, 0, 0, 0, 0xffffffff);
	SEND(HDR(SET_FRAMEBUFFER_STATE, 0, 2), 0, 0);
	SEND(HDR(CLEAR, 0, 8), 0xffffffff, 0, 0, 0, 0, 0, 0, 0xffffffff);
}

static void inline_write_bad(struct env *e)
{
	SEND(HDR(RESOURCE_INLINE_WRITE, 0, 15), e->tex, 0, 0, 0xffffffff, 0xffffffff, 0, 0, 0, 64, 64, 1, 1, 2, 3, 4);
	SEND(HDR(RESOURCE_INLINE_WRITE, 0, 12), e->tex, 0, 0, 256, 0, 60, 0, 0, 64, 64, 1, 0);
	SEND(HDR(RESOURCE_INLINE_WRITE, 0, 12), e->tex, 99, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0);
	SEND(HDR(RESOURCE_INLINE_WRITE, 0, 12), e->buf, 0, 0, 0, 0, 0xfffffff0, 0, 0, 0x100, 1, 1, 0);
}

static void query_bad(struct env *e)
{
	SEND(HDR(CREATE_OBJECT, OBJ_QUERY, 4), 5, 0xffff | 0xffffu << 16, 0xfffffff0, e->buf);
	SEND(HDR(CREATE_OBJECT, OBJ_QUERY, 4), 6, 0, 0xfffffff0, e->buf);
	SEND(HDR(BEGIN_QUERY, 0, 1), 6);
	SEND(HDR(END_QUERY, 0, 1), 6);
	SEND(HDR(GET_QUERY_RESULT, 0, 2), 77, 1);
	SEND(HDR(GET_QUERY_RESULT, 0, 2), 6, 1);
	SEND(HDR(GET_QUERY_RESULT_QBO, 0, 6), 6, e->buf, 1, 5, 0xfffffff0, 0xffffffff);
	SEND(HDR(END_QUERY, 0, 1), 0xffffffff);
}

static void streamout_bad(struct env *e)
{
	SEND(HDR(CREATE_OBJECT, OBJ_STREAMOUT_TARGET, 4), 9, e->tex, 0xfffffff0, 0xffffffff);
	SEND(HDR(CREATE_OBJECT, OBJ_STREAMOUT_TARGET, 4), 10, e->buf, 0xfffffff0, 0xffffffff);
	SEND(HDR(SET_STREAMOUT_TARGETS, 0, 6), 0xffffffff, 9, 10, 0xdead, 0, 0);
	SEND(HDR(DRAW_VBO, 0, 12), 0, 3, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0);
	SEND(HDR(SET_SHADER_IMAGES, 0, 7), 99, 1000, 0xffff, 0xffffffff, 0xfffffff0, 0xffffffff, e->tex);
	SEND(HDR(LAUNCH_GRID, 0, 8), 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
	     e->buf, 0xfffffff0);
}

static void stream_truncated(struct env *e)
{
	SEND(HDR(CREATE_OBJECT, OBJ_SURFACE, 0xffff), 1, 2, 3);
	SEND(HDR(0xff, 0, 1), 0);
	SEND(HDR(63, 0, 0));
	SEND(HDR(END_TRANSFERS, 0, 0xfff0), 0);
	SEND(HDR(CREATE_OBJECT, OBJ_SAMPLER_VIEW, 2), 1, e->tex);
	submit(e, NULL, 0, NULL);
	uint32_t one = HDR(NOP, 0, 0);
	struct drm_virtgpu_execbuffer eb = { .size = 3, .command = (uintptr_t)&one };
	if (xioctl(e->fd, DRM_IOCTL_VIRTGPU_EXECBUFFER, &eb))
		e->errors++;
}

static void many_contexts(struct env *e)
{
	int fds[64];
	for (int i = 0; i < 64; i++) {
		fds[i] = card();
		struct env c = { .fd = fds[i] };
		uint32_t nop[] = { HDR(NOP, 0, 0) };
		submit(&c, nop, 1, NULL);
		e->errors += c.errors;
	}
	for (int i = 0; i < 64; i++)
		close(fds[i]);
}

static const struct bad_case {
	const char *name;
	void (*run)(struct env *);
} CASES[] = {
	{ "res-huge-samples", res_huge_samples },
	{ "res-huge-sizes", res_huge_sizes },
	{ "res-bad-enums", res_bad_enums },
	{ "transfer-bad-stride", transfer_bad_stride },
	{ "transfer-bad-level", transfer_bad_level },
	{ "transfer-box-outside", transfer_box_outside },
	{ "stream-bad-handles", stream_bad_handles },
	{ "shader-oversized", shader_oversized },
	{ "shader-bad-tgsi", shader_bad_tgsi },
	{ "vertex-elements-many", vertex_elements_many },
	{ "constant-buffer-oversized", constant_buffer_oversized },
	{ "draw-nothing-bound", draw_nothing_bound },
	{ "sub-ctx-bad", sub_ctx_bad },
	{ "surface-bad-level", surface_bad_level },
	{ "blit-copy-bad", blit_bad },
	{ "clear-no-framebuffer", clear_no_framebuffer },
	{ "inline-write-bad", inline_write_bad },
	{ "query-bad", query_bad },
	{ "streamout-images-grid-bad", streamout_bad },
	{ "stream-truncated", stream_truncated },
	{ "many-contexts", many_contexts },
};
#define NCASES (int)(sizeof(CASES) / sizeof(*CASES))

static void env_init(struct env *e)
{
	memset(e, 0, sizeof(*e));
	e->fd = card();
	if (res_create(e, TARGET_2D, FMT_B8G8R8X8, BIND_RENDER_TARGET | BIND_SAMPLER_VIEW, 64, 64, 1, 1, 0, 0,
		       &e->tex_bo, &e->tex) ||
	    res_create(e, TARGET_BUFFER, 0, BIND_CONSTANT_BUFFER, 4096, 1, 1, 1, 0, 0,
		       &e->buf_bo, &e->buf)) {
		LOG("GUEST-ERROR cannot create the case's resources: %s\n", strerror(errno));
		exit(2);
	}
	e->errors = 0;
}

/* a fresh context clears its texture to red and reads it back: "ok" or why not */
static const char *health(char *why, size_t n)
{
	struct env e;
	env_init(&e);
	uint32_t cmd[] = {
		HDR(CREATE_OBJECT, OBJ_SURFACE, 5), 1, e.tex, FMT_B8G8R8X8, 0, 0,
		HDR(SET_FRAMEBUFFER_STATE, 0, 3), 1, 0, 1,
		HDR(CLEAR, 0, 8), CLEAR_COLOR0, 0x3f800000 /* 1.0 */, 0, 0, 0x3f800000, 0, 0, 0,
	};
	int fence = -1;
	if (submit(&e, cmd, sizeof(cmd) / 4, &fence) || fence < 0) {
		snprintf(why, n, "FAILED (submit: %s)", strerror(errno));
		return why;
	}
	struct pollfd p = { .fd = fence, .events = POLLIN };
	int r = poll(&p, 1, 10000);
	close(fence);
	if (r != 1) {
		snprintf(why, n, "FAILED (the clear's fence did not signal in 10 s)");
		return why;
	}
	transfer(&e, 0, e.tex_bo, 0, 0, 0, 64, 64, 1, 0, 0, 0, 0);
	struct drm_virtgpu_3d_wait w = { .handle = e.tex_bo };
	struct drm_virtgpu_map m = { .handle = e.tex_bo };
	if (e.errors || xioctl(e.fd, DRM_IOCTL_VIRTGPU_WAIT, &w) || xioctl(e.fd, DRM_IOCTL_VIRTGPU_MAP, &m)) {
		snprintf(why, n, "FAILED (read-back: %s)", strerror(errno));
		return why;
	}
	uint8_t *px = mmap(NULL, 64 * 64 * 4, PROT_READ, MAP_SHARED, e.fd, (off_t)m.offset);
	if (px == MAP_FAILED) {
		snprintf(why, n, "FAILED (mmap: %s)", strerror(errno));
		return why;
	}
	/* B8G8R8X8: bytes B, G, R, X */
	int good = px[0] == 0 && px[1] == 0 && px[2] == 0xff && px[64 * 64 * 4 - 2] == 0xff;
	snprintf(why, n, good ? "ok" : "FAILED (read back %02x%02x%02x, not red)", px[2], px[1], px[0]);
	munmap(px, 64 * 64 * 4);
	close(e.fd);
	return why;
}

int main(int argc, char **argv)
{
	const char *only = NULL;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			only = argv[++i];
		} else if (!strcmp(argv[i], "--list")) {
			for (int c = 0; c < NCASES; c++)
				printf("%s\n", CASES[c].name);
			return 0;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	int ran = 0, healthy = 0;
	for (int c = 0; c < NCASES; c++) {
		if (only && !strstr(only, CASES[c].name))
			continue;
		LOG("GUEST-BAD-START name=%s\n", CASES[c].name);
		int pipefd[2];
		if (pipe(pipefd))
			return 2;
		pid_t pid = fork();
		if (pid == 0) {
			close(pipefd[0]);
			alarm(120); /* a case stuck in the kernel ends as a signal, not a hang */
			struct env e;
			env_init(&e);
			CASES[c].run(&e);
			const char *fence = barrier(&e);
			dprintf(pipefd[1], "errors=%d fence=%s", e.errors, fence);
			_exit(0);
		}
		close(pipefd[1]);
		char res[128] = "errors=? fence=?";
		ssize_t len = read(pipefd[0], res, sizeof(res) - 1);
		res[len > 0 ? len : 0] = 0;
		if (len <= 0)
			snprintf(res, sizeof(res), "errors=? fence=?");
		close(pipefd[0]);
		int status = 0;
		waitpid(pid, &status, 0);
		LOG("GUEST-BAD-END name=%s %s rc=%d\n", CASES[c].name, res,
		    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
		char why[128];
		const char *h = health(why, sizeof(why));
		healthy += !strcmp(h, "ok");
		ran++;
		LOG("GUEST-BAD-HEALTH name=%s %s\n", CASES[c].name, h);
	}
	LOG("GUEST-BAD-DONE cases=%d healthy=%d\n", ran, healthy);
	return 0;
}
