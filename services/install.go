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

// basePackages are the Debian packages that hold the binaries this package
// runs for one server; each package is named after its binary.
const basePackages = "clickhouse-server clickhouse-client redis-server"

// zooKeeperPackage is what a cluster needs besides: ZooKeeper and its Java.
const zooKeeperPackage = "zookeeper"

// BrowserPackage is Debian's headless-capable browser, for the console's
// tests and screenshots; its binary has its name.
const BrowserPackage = "chromium"

// Install installs ClickHouse and Redis with apt-get unless their binaries
// are there already, and ZooKeeper too when cluster is set.
func Install(ctx context.Context, log io.Writer, cluster bool) error {
	packages := basePackages
	if cluster {
		packages += " " + zooKeeperPackage
	}
	return InstallPackages(ctx, log, packages)
}

// InstallPackages installs the space-separated Debian packages with apt-get
// unless their binaries are there already (a package's binary has its
// name, ZooKeeper's is its jar). Not being root, it uses sudo -n, which
// fails instead of asking for a password.
func InstallPackages(ctx context.Context, log io.Writer, packages string) error {
	if log == nil {
		log = io.Discard
	}
	missing := missingBinaries(packages)
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
	if missing := missingBinaries(packages); len(missing) > 0 {
		return fmt.Errorf("install %s: still missing %s", packages, strings.Join(missing, ", "))
	}
	return nil
}

// missingBinaries names the packages whose binary (ZooKeeper: its jar and
// java) is not there.
func missingBinaries(packages string) []string {
	var missing []string
	for _, name := range strings.Fields(packages) {
		var err error
		if name == zooKeeperPackage {
			if _, err = os.Stat(zooKeeperJar); err == nil {
				_, err = lookBinary("java")
			}
		} else {
			_, err = lookBinary(name)
		}
		if err != nil {
			missing = append(missing, name)
		}
	}
	return missing
}
