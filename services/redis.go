package services

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Redis is one redis-server process without persistence, working in Dir. It
// is not safe for concurrent use.
type Redis struct {
	Dir  string // absolute
	Port int

	*process
}

// StartRedis starts redis-server in dir and waits until it answers PING.
// Port 0 picks a free port. The server dies with this process; Up starts
// servers that outlive it.
func StartRedis(ctx context.Context, dir string, port int) (*Redis, error) {
	r, err := startRedis(ctx, dir, port, false)
	if err != nil {
		return nil, fmt.Errorf("start redis: %w", err)
	}
	return r, nil
}

func startRedis(ctx context.Context, dir string, port int, detach bool) (*Redis, error) {
	bin, err := lookBinary("redis-server")
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis dir: %w", err)
	}
	var r *Redis
	err = onFreePorts([]int{port}, func(ports []int) error {
		r = &Redis{Dir: dir, Port: ports[0]}
		r.process = &process{
			name: "redis",
			bin:  bin,
			args: []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
				"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir},
			dir:     dir,
			logPath: filepath.Join(dir, "redis.log"),
			detach:  detach,
			limit:   15 * time.Second,
			grace:   redisGrace,
			ready:   r.ping,
			failure: func() string {
				// Redis marks warnings with " # ".
				return lastLine(filepath.Join(dir, "redis.log"), func(line string) bool {
					return strings.Contains(line, " # ")
				})
			},
		}
		return r.process.Start(ctx)
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Addr is host:port of the server.
func (r *Redis) Addr() string { return hostPort(r.Port) }

func (r *Redis) ping(ctx context.Context) error { return pingRedis(ctx, r.Addr()) }

// pingRedis speaks just enough RESP to send PING; the project's Redis client
// lives elsewhere.
func pingRedis(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("ping: %q", strings.TrimSpace(line))
	}
	return nil
}
