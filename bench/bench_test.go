package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// TestMain lets the test binary serve as the cross-process reader, as the
// bench binary does.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestSuiteSmoke runs every section in the tiny mode and checks the output
// is well formed and complete: every section and every target has figures
// or says why not. It asserts nothing about the figures themselves.
func TestSuiteSmoke(t *testing.T) {
	rig.RequireRoot(t)
	if testing.Short() {
		t.Skip("runs the whole suite in its tiny mode (about a minute); skipped with -short")
	}
	cfg, err := sized("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Out = t.TempDir()
	var log bytes.Buffer
	cfg.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	t.Logf("progress:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(cfg.Out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("results.md:\n%s", md)
	if string(md) != res.Markdown() {
		t.Error("results.md differs from the printed table")
	}
	js, err := os.ReadFile(filepath.Join(cfg.Out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatalf("results.json does not parse: %v", err)
	}
	if back.Machine.NProc < 1 || back.Machine.GoVersion == "" || back.Date == "" {
		t.Errorf("machine or date missing: %+v %q", back.Machine, back.Date)
	}
	if len(back.Sections) != len(allSections()) {
		t.Fatalf("%d sections in results.json, want %d", len(back.Sections), len(allSections()))
	}
	for i, sec := range back.Sections {
		if sec.ID != allSections()[i] {
			t.Errorf("section %d is %q, want %q", i, sec.ID, allSections()[i])
		}
		if sec.NotMeasured != "" {
			t.Logf("section %s not measured: %s", sec.ID, sec.NotMeasured)
			continue
		}
		if len(sec.Rows) == 0 {
			t.Errorf("section %s has neither rows nor a not-measured reason", sec.ID)
		}
		for _, r := range sec.Rows {
			switch {
			case r.NotMeasured != "":
				if !strings.Contains(string(md), "not measured: "+mdCell(r.NotMeasured)) {
					t.Errorf("section %s row %q: reason missing from the table", sec.ID, r.Label)
				}
			case len(r.Values) == 0 || len(r.Cells) != len(sec.Columns)-1:
				t.Errorf("section %s row %q: %d values, %d cells for %d columns", sec.ID, r.Label, len(r.Values), len(r.Cells), len(sec.Columns))
			}
		}
	}
	if len(back.Targets) != 10 {
		t.Errorf("%d targets, want 10", len(back.Targets))
	}
	for _, tg := range back.Targets {
		if tg.Reason == "" && tg.Unit == "" {
			t.Errorf("target %q has neither a unit nor a not-measured reason", tg.Name)
		}
	}
	for _, png := range []string{"commit_latency_cdf.png", "failover_hist.png"} {
		b, err := os.ReadFile(filepath.Join(cfg.Out, png))
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s missing or not a PNG (%d bytes, %v)", png, len(b), err)
		}
	}
	// The run removed what it created.
	left, _ := filepath.Glob(fmt.Sprintf("/dev/shm/boardha-bench%d-*", os.Getpid()))
	if len(left) > 0 {
		t.Errorf("shared memory regions left behind: %v", left)
	}
}
