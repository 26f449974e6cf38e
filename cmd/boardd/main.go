// Command boardd runs one board of a boardha replication group and is the
// client of a running board's local socket.
//
//	boardd run    -site 1 -group fib -peers 1=10.0.0.1:7000,2=10.0.0.2:7000 ...
//	boardd get    [-sock S] [-db D] KEY
//	boardd put    [-sock S] [-db D] KEY VALUE
//	boardd del    [-sock S] [-db D] KEY
//	boardd scan   [-sock S] [-db D] [-prefix P] [-start K] [-end K] [-limit N]
//	boardd stat   [-sock S] [-json]
//	boardd elect  [-sock S]
//	boardd stepdown [-sock S]
//	boardd events [-sock S] [-json]
//	boardd load   [-sock S] [-rate N] [-keys N] [-duration D]
//	boardd rig    [-boards N] [-script]
//
// Exit status: 0 success, 1 other failure, 2 usage error, 3 key not found,
// 4 board or master unavailable.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitNotFound = 3
	exitUnavail  = 4
)

const usageText = `usage: boardd <command> [flags] [args]

commands:
  run      run one board (flags or -config file.json; flags override the file)
  get      print a key's value            boardd get [-db D] KEY
  put      write a key                    boardd put [-db D] KEY VALUE
  del      delete a key                   boardd del [-db D] KEY
  scan     list keys                      boardd scan [-db D] [-prefix P] [-start K] [-end K] [-limit N]
  stat     show replication state         boardd stat [-json]
  elect    call an election               boardd elect
  stepdown make this master a replica    boardd stepdown (the group elects; a board of higher priority wins)
  events   stream replication events      boardd events [-json]
  load     steady writer                  boardd load [-rate N] [-keys N] [-duration D]
  rig      a whole chassis on this machine boardd rig [-boards N] [-script]

client commands find the board's socket by -sock, $BOARDHA_SOCK, -group/-site,
or the only socket in the default directory. "boardd <command> -h" lists flags.
exit status: 0 ok, 1 failure, 2 usage, 3 not found, 4 unavailable.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = cmdRun(rest, stdout, stderr)
	case "get", "put", "del", "scan", "stat", "elect", "stepdown", "events":
		err = cmdClient(cmd, rest, stdout, stderr)
	case "load":
		err = cmdLoad(rest, stdout, stderr)
	case "rig":
		err = cmdRig(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	default:
		fmt.Fprintf(stderr, "boardd: unknown command %q\n%s", cmd, usageText)
		return exitUsage
	}
	return exitCode(err, stderr)
}

// usageError marks a command-line mistake (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// errQuiet ends a command with a status but no further message (flag
// parsing already printed it).
type errQuiet struct{ code int }

func (e *errQuiet) Error() string { return fmt.Sprintf("exit %d", e.code) }

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var q *errQuiet
	if errors.As(err, &q) {
		return q.code
	}
	fmt.Fprintln(stderr, err)
	var u *usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	var re *remoteError
	if errors.As(err, &re) {
		switch re.code {
		case codeUsage:
			return exitUsage
		case codeNotFound:
			return exitNotFound
		case codeUnavail:
			return exitUnavail
		}
	}
	return exitError
}
