"""An OTP-style supervisor on trio nurseries: a library that imports nothing of Sigma's but leaves.

Read in this order:
- `spec`: `ChildSpec`, the supervision events and what a supervisor reports (plain data);
- `policy`: restart types, strategies, the restart budget (pure decisions, time passed in);
- `watchdog`: the liveness a watched child beats, and how a hang is found;
- `_child`: `ChildRecord` and `Incarnation`, one child across its runs and one run of it;
- `_core`: the machinery both supervisors share (start in order, stop in reverse, restart);
- `supervisor`: `Supervisor` (a fixed tree) and `DynamicSupervisor` (children added at run time);
- `observe`, `tee`: logging the event stream, and handing it to more than one listener.
"""

from sigma.supervision.supervisor import *  # noqa: F403
from sigma.supervision.supervisor import __all__ as __all__
