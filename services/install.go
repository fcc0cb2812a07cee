package services

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// packages are the Debian packages that hold the binaries this package
// runs; each package is named after its binary.
const packages = "clickhouse-server clickhouse-client redis-server"

// Install installs ClickHouse and Redis with apt-get unless their binaries
// are there already. Not being root, it uses sudo -n, which fails instead of
// asking for a password.
func Install(ctx context.Context, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	missing := missingBinaries()
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(log, "missing %s: installing %s\n", strings.Join(missing, ", "), packages)
	// env carries DEBIAN_FRONTEND through sudo, which resets the environment.
	prefix := []string{"env", "DEBIAN_FRONTEND=noninteractive"}
	if os.Geteuid() != 0 {
		prefix = append([]string{"sudo", "-n"}, prefix...)
	}
	for _, args := range [][]string{
		{"apt-get", "update"},
		append([]string{"apt-get", "install", "-y"}, strings.Fields(packages)...),
	} {
		args = slices.Concat(prefix, args)
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("install %s: %s: %w (install them as root: apt-get install -y %[1]s)",
				packages, strings.Join(args, " "), err)
		}
	}
	if missing := missingBinaries(); len(missing) > 0 {
		return fmt.Errorf("install %s: still missing %s", packages, strings.Join(missing, ", "))
	}
	return nil
}

func missingBinaries() []string {
	var missing []string
	for _, name := range strings.Fields(packages) {
		if _, err := lookBinary(name); err != nil {
			missing = append(missing, name)
		}
	}
	return missing
}
