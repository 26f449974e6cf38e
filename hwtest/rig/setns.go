package rig

import (
	"fmt"
	"runtime"
	"syscall"
)

// setnsTrap returns the setns(2) system call number, which the syscall
// package does not define for every architecture.
func setnsTrap() (uintptr, error) {
	switch runtime.GOARCH {
	case "amd64":
		return 308, nil
	case "386":
		return 346, nil
	case "arm64", "riscv64", "loong64":
		return 268, nil
	case "arm":
		return 375, nil
	case "ppc64", "ppc64le":
		return 350, nil
	case "s390x":
		return 339, nil
	}
	return 0, fmt.Errorf("rig: setns system call number unknown on %s", runtime.GOARCH)
}

// setns switches the calling thread into the network namespace open as fd.
func setns(fd uintptr) error {
	trap, err := setnsTrap()
	if err != nil {
		return err
	}
	if _, _, errno := syscall.RawSyscall(trap, fd, syscall.CLONE_NEWNET, 0); errno != 0 {
		return errno
	}
	return nil
}
