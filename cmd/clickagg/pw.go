package main

import "os"

// envPassword reads a secret from the environment only, never from a flag,
// so it does not show in process lists or shell history.
func envPassword(name string) string { return os.Getenv(name) }
