/* input.c: the input test of gpu-test (evdev devices printed for the host harness). */
#include "gpu-test.h"

/* input: the picture (so that the host shows the guest), then every evdev device:
 * waits up to INPUT_WAIT_S for a first /dev/input/event*, opens them all and prints
 *   GUEST-INPUT-DEV event<N> name="<EVIOCGNAME>"
 *   GUEST-INPUT-ABS event<N> code=<c> min=<m> max=<M>   (ABS_X, ABS_Y of EV_ABS devices)
 *   GUEST-INPUT-READY devices=K
 * then every event but EV_SYN, decimal, one line each:
 *   GUEST-INPUT event<N> type=<t> code=<c> value=<v> */
#define INPUT_WAIT_S 5
#define MAX_EVDEV 32

static int bit_set(const unsigned long *bits, int n)
{
	return (bits[n / (8 * sizeof(long))] >> (n % (8 * sizeof(long)))) & 1;
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* the N of every /dev/input/eventN, sorted */
static int list_event_devs(int *nums, int max)
{
	DIR *d = opendir("/dev/input");
	int n = 0;
	if (!d)
		return 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < max) {
		int k;
		char c;
		if (sscanf(e->d_name, "event%d%c", &k, &c) == 1)
			nums[n++] = k;
	}
	closedir(d);
	qsort(nums, n, sizeof(int), cmp_int);
	return n;
}

int t_input(void)
{
	struct output outs[MAX_OUT];
	struct buffer b;
	int fd = open_card();
	struct output *o = show_pattern(fd, outs, &b);
	LOG("GUEST-PATTERN-READY %dx%d head=%d output=%s\n", b.w, b.h, (int)(o - outs), o->name);

	/* the devices: wait for a first one, then until the list has been stable 300 ms */
	int nums[MAX_EVDEV], n = 0, last = -1;
	double t0 = now(), stable = 0;
	for (;;) {
		n = list_event_devs(nums, MAX_EVDEV);
		if (n != last) {
			last = n;
			stable = now();
		}
		if (n > 0 && now() - stable >= 0.3)
			break;
		if (n == 0 && now() - t0 >= INPUT_WAIT_S)
			DIE("no /dev/input/event* after %ds (virtio_input/evdev loaded? "
			    "-device virtio-keyboard-pci / virtio-tablet-pci given?)\n", INPUT_WAIT_S);
		usleep(50000);
	}

	struct pollfd pfd[MAX_EVDEV];
	int np = 0;
	for (int i = 0; i < n; i++) {
		char path[64], name[256] = "", safe[256];
		snprintf(path, sizeof(path), "/dev/input/event%d", nums[i]);
		int efd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (efd < 0) {
			LOG("GUEST-WARN open %s: %s\n", path, strerror(errno));
			continue;
		}
		if (xioctl(efd, EVIOCGNAME(sizeof(name) - 1), name) < 0)
			snprintf(name, sizeof(name), "?");
		size_t k;
		for (k = 0; name[k] && k < sizeof(safe) - 1; k++)
			safe[k] = (name[k] == '"' || name[k] == '\\' || name[k] < 0x20) ? '_' : name[k];
		safe[k] = 0;
		LOG("GUEST-INPUT-DEV event%d name=\"%s\"\n", nums[i], safe);
		unsigned long types[EV_MAX / (8 * sizeof(long)) + 1] = {0};
		unsigned long abs[ABS_MAX / (8 * sizeof(long)) + 1] = {0};
		if (xioctl(efd, EVIOCGBIT(0, sizeof(types)), types) >= 0 && bit_set(types, EV_ABS) &&
		    xioctl(efd, EVIOCGBIT(EV_ABS, sizeof(abs)), abs) >= 0) {
			static const int axes[2] = { ABS_X, ABS_Y };
			for (int a = 0; a < 2; a++) {
				struct input_absinfo ai;
				if (!bit_set(abs, axes[a]) || xioctl(efd, EVIOCGABS(axes[a]), &ai) < 0)
					continue;
				LOG("GUEST-INPUT-ABS event%d code=%d min=%d max=%d\n", nums[i], axes[a],
				    ai.minimum, ai.maximum);
			}
		}
		pfd[np].fd = efd;
		pfd[np].events = POLLIN;
		nums[np] = nums[i];
		np++;
	}
	if (!np)
		DIE("no input device could be opened\n");
	LOG("GUEST-INPUT-READY devices=%d\n", np);

	double deadline = hold_deadline();
	for (;;) {
		int t = hold_timeout(deadline, 1000);
		if (t == -2)
			break;
		if (poll(pfd, np, t) <= 0)
			continue;
		for (int i = 0; i < np; i++) {
			if (!(pfd[i].revents & POLLIN))
				continue;
			struct input_event ev[64];
			ssize_t len;
			while ((len = read(pfd[i].fd, ev, sizeof(ev))) > 0) {
				for (int j = 0; j < (int)(len / sizeof(ev[0])); j++) {
					if (ev[j].type == EV_SYN)
						continue;
					LOG("GUEST-INPUT event%d type=%u code=%u value=%d\n", nums[i],
					    ev[j].type, ev[j].code, ev[j].value);
				}
			}
		}
	}
	return 0;
}
