/*
 * pause: the process that holds a pod sandbox's namespaces.
 *
 * It behaves like the Kubernetes pause container: SIGINT and SIGTERM make it
 * exit 0, SIGCHLD makes it reap its children (it is PID 1 in the pod when
 * the PID namespace is shared), and otherwise it sleeps in pause(2).
 * Built by the cri-guard test harness with `gcc -static -Os -s`.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int signo)
{
	(void)signo;
	_exit(0);
}

static void on_child(int signo)
{
	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		printf("pause (cri-guard harness)\n");
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "warning: pause should be the first process\n");

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop;
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
		return 1;

	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP;
	if (sigaction(SIGCHLD, &sa, NULL) < 0)
		return 2;

	for (;;)
		pause();
	return 42;
}
