//go:build unix

package lb

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the program in a process group of its own, so that a
// stop reaches the children a script is waiting for (a `sleep` in a poll loop
// would otherwise delay the script's trap until it ends).
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// terminate asks the program's process group to stop.
func terminate(cmd *exec.Cmd) error {
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
}

// killGroup removes whatever a stopped program left behind in its group. The
// group is the one setProcessGroup created for this program and nothing else.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
