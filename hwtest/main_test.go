package hwtest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	soak    = flag.Bool("hwtest.soak", false, "run the long fault scenarios (>= 20 master kills, a 200 MB reboot)")
	fillMB  = flag.Int("hwtest.fillmb", 0, "MB the reboot scenario fills before rebooting (default 8, 200 with -hwtest.soak)")
	keepLog = flag.Bool("hwtest.keeplogs", false, "keep the boards' logs (their directory is printed) even when a scenario passes")
)

// The boardd binary is built once per test binary run, on first use, into
// a directory TestMain removes.
var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// boardd returns the path of a freshly built boardd. A compile error fails
// the test; a work tree without cmd/boardd skips it, naming what is missing.
func boardd(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join("..", "cmd", "boardd")); err != nil {
		t.Skipf("cmd/boardd is not in this tree (%v): the scenarios need the daemon", err)
	}
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "hwtest-boardd")
		if build.err != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		build.bin = filepath.Join(build.dir, "boardd")
		cmd := exec.Command(goBin, "build", "-o", build.bin, "./cmd/boardd")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/boardd: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}
