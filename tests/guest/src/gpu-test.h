/*
 * gpu-test.h: what the parts of gpu-test share (see gpu-test.c for the tests and the
 * picture): the KMS plumbing of kms.c, the options, the log macros.
 */
#ifndef GPU_TEST_H
#define GPU_TEST_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/socket.h>
#include <linux/fb.h>
#include <linux/input.h>
#include <linux/netlink.h>

#include <drm.h>
#include <drm_mode.h>
#include <virtgpu_drm.h>

#define MAX_OUT 16

#define LOG(...) do { printf(__VA_ARGS__); fflush(stdout); } while (0)
#define DIE(...) do { LOG("GUEST-ERROR " __VA_ARGS__); exit(2); } while (0)

/* options (gpu-test.c) */
extern const char *card_path;
extern int opt_w, opt_h, opt_frames, opt_hold, opt_output;

struct output {
	uint32_t conn_id, crtc_id;
	char name[32];
	int connected;
	struct drm_mode_modeinfo mode;
	int have_mode;
	int nmodes;
};

struct buffer {
	uint32_t handle, fb_id, pitch, w, h;
	uint64_t size;
	uint8_t *map;
};


/* kms.c: the picture, KMS plumbing, --hold */
int xioctl(int fd, unsigned long req, void *arg);
double now(void);
void draw(uint8_t *map, uint32_t pitch, int W, int H, int head, int frame);
void get_resources(int fd);
const char *conn_type_name(uint32_t t);
void probe_output(int fd, int i, struct output *o, uint32_t *used_crtcs);
void print_output(int i, struct output *o);
void create_buffer(int fd, int w, int h, struct buffer *b);
void set_crtc(int fd, struct output *o, struct buffer *b);
int dirty_fb(int fd, struct buffer *b);
int vgpu_sync(int fd);
void destroy_buffer(int fd, struct buffer *b);
double hold_deadline(void);
int hold_timeout(double deadline, int step_ms);
void hold(void);
int open_card(void);
int probe_all(int fd, struct output *outs);
struct output *pick_output(struct output *outs, int n);
struct output *show_pattern(int fd, struct output *outs, struct buffer *b);
int t_input(void); /* input.c */

#endif
