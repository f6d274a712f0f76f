/*
 * nginx stand-in for critest's web-server images (cri-guard test helper).
 *
 * critest only needs what it observes of nginx: a main process whose
 * /proc/<pid>/cmdline contains "master process" and whose comm is "nginx"
 * (for `pidof nginx`), its PID in /var/run/nginx.pid, and HTTP 200 for "/"
 * on the port in $NGINX_PORT (default 80). The serving is done by a child
 * `busybox httpd`; this process supervises it like nginx's master would.
 * Built with `gcc -static -Os -s`.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define SELF "/usr/sbin/nginx"
#define MASTER "nginx: master process nginx -g daemon off;"

static volatile pid_t child;

static void on_stop(int signo)
{
	(void)signo;
	if (child > 0)
		kill(child, SIGTERM);
	_exit(0);
}

int main(int argc, char **argv)
{
	char *port = getenv("NGINX_PORT");
	char *root = getenv("NGINX_ROOT");
	struct sigaction sa;
	FILE *f;
	int status;
	pid_t pid;

	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		fprintf(stderr, "nginx version: nginx/1.14.2 (cri-guard stand-in)\n");
		return 0;
	}
	if (argc < 1 || strstr(argv[0], "master process") == NULL) {
		char *nargv[] = {MASTER, NULL};
		execv(SELF, nargv);
		perror("nginx: re-exec " SELF);
		/* carry on under the original name */
	}
	if (port == NULL || *port == '\0')
		port = "80";
	if (root == NULL || *root == '\0')
		root = "/usr/share/nginx/html";

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);

	mkdir("/var/run", 0755);
	f = fopen("/var/run/nginx.pid", "w");
	if (f != NULL) {
		fprintf(f, "%d\n", (int)getpid());
		fclose(f);
	} else {
		perror("nginx: /var/run/nginx.pid");
	}

	child = fork();
	if (child < 0) {
		perror("nginx: fork");
		return 1;
	}
	if (child == 0) {
		execl("/bin/busybox", "httpd", "-f", "-p", port, "-h", root, (char *)NULL);
		perror("nginx: exec busybox httpd");
		_exit(127);
	}
	printf("nginx: master process started, serving %s on port %s\n", root, port);
	fflush(stdout);
	for (;;) {
		pid = waitpid(-1, &status, 0);
		if (pid < 0)
			return 1;
		if (pid == child)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
	}
}
