package critest

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// critest's HostIpc specs create a 1 MiB SysV shared memory segment on the
// host with `ipcmk -M 1048576` and never remove it. Run removes the
// segments of that size that appeared during the run and are attached
// nowhere, so that runs leave no trace on the host.
const critestShmSize = 1048576

type shmSegment struct {
	id, size, nattch int
}

// shmSegments lists the SysV shared memory segments of the caller's IPC
// namespace from /proc/sysvipc/shm.
func shmSegments() map[int]shmSegment {
	segs := map[int]shmSegment{}
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		return segs
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// key shmid perms size cpid lpid nattch ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		id, err1 := strconv.Atoi(fields[1])
		size, err2 := strconv.Atoi(fields[3])
		nattch, err3 := strconv.Atoi(fields[6])
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		segs[id] = shmSegment{id: id, size: size, nattch: nattch}
	}
	return segs
}

// removeLeakedShm removes the unattached critest-sized segments that are
// not in before, and returns their IDs.
func removeLeakedShm(before map[int]shmSegment) []int {
	var removed []int
	for id, s := range shmSegments() {
		if _, old := before[id]; old || s.size != critestShmSize || s.nattch != 0 {
			continue
		}
		if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err == nil {
			removed = append(removed, id)
		}
	}
	return removed
}
