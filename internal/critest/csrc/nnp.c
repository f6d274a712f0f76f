/*
 * nonewprivs stand-in (cri-guard test helper): installed setuid root, it
 * prints its effective UID, like registry.k8s.io/e2e-test-images/nonewprivs.
 * With no_new_privs set the setuid bit is ignored and the caller's UID is
 * printed. Built with `gcc -static -Os -s`.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
