package dispatch

import (
	"context"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// indexTimeout bounds how long the hold check waits for the freight index
// to catch up before it reads KV instead (as auto-promotion does).
const indexTimeout = 3 * time.Second

// newerAvailable returns the newest freight of freight's origin available
// to stage at now when it is newer than freight (a hand-made promotion of
// freight then holds auto-promotion of the origin), else nil. It reads
// the freight index when it is current — only the freight newer than
// freight that may be available — and otherwise all of the project's
// freight from KV; both give the model's answer
// (model.NewestAvailableFreight).
func (d *Dispatcher) newerAvailable(ctx context.Context, project string, stage *model.Stage, freight *model.Freight, now time.Time) (*model.Freight, error) {
	if d.o.Freight != nil {
		sets, err := d.o.Freight.Sync(ctx, indexTimeout)
		if err == nil {
			return sets.NewestAvailable(project, stage, freight.Origin, now, freight), nil
		}
		if ctx.Err() == nil {
			d.o.Logger.Warn("freight index: reading KV instead", "err", err)
		}
	}
	all, err := state.ListAll[*model.Freight](ctx, d.o.Store, project, model.KindFreight)
	if err != nil {
		return nil, err
	}
	if newest := model.NewestAvailableFreight(all, stage, freight.Origin, now); newest != nil && model.Newer(newest, freight) {
		return newest, nil
	}
	return nil, nil
}
