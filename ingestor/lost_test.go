package ingestor

import (
	"errors"
	"net"
	"testing"

	"github.com/ClickHouse/ch-go/proto"
)

// The errors after which a block may be in the table: the answer lost on
// the way, ClickHouse not knowing, or a failure once the table had it
// (seen on 18.16: ZooKeeper lost while a view allocated its block number).
func TestAnswerLost(t *testing.T) {
	for _, c := range []struct {
		err  error
		lost bool
	}{
		{&NetError{Err: errors.New("connection reset by peer")}, true},
		{&NetError{Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, false},
		{&ServerError{Code: proto.ErrUnknownStatusOfInsert}, true},
		{&ServerError{Code: proto.ErrKeeperException, Message: "Cannot allocate block number in ZooKeeper: Coordination::Exception: Connection loss: while pushing to view db.dim_stats_minute_mv"}, true},
		{&ServerError{Code: proto.ErrTableIsReadOnly, Message: "Table is in readonly mode"}, false},
		{&ServerError{Code: proto.ErrNoZookeeper, Message: "ZooKeeper session has been expired."}, false},
		{&ServerError{Code: proto.ErrMemoryLimitExceeded, Message: "Memory limit exceeded: while pushing to view db.ad_stats_minute_mv"}, true},
	} {
		if got := answerLost(c.err); got != c.lost {
			t.Errorf("answerLost(%v) = %v, want %v", c.err, got, c.lost)
		}
	}
}
