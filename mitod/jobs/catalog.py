"""The job catalog: which jobs a configuration defines, and which handler runs each kind.

Job names (in ``mitoctl run``, ``autonomous_tasks.name`` and
``check_results.job``): ``site:<name>``, ``system_health``, ``optimization``,
``progress_report``, ``emergency_optimization`` and ``disk_cleanup``. The last
two run on demand: a threshold crossed by ``system_health`` enqueues them, and
an operator may run them by name.
"""

from typing import TYPE_CHECKING

from mitod.config import Config, SiteConfig
from mitod.engine.scheduler import JobSpec
from mitod.engine.tasks import Priority

if TYPE_CHECKING:
    from mitod.engine.engine import Engine

SITE_CHECK = "site_check"
SYSTEM_HEALTH = "system_health"
OPTIMIZATION = "optimization"
PROGRESS_REPORT = "progress_report"
EMERGENCY_OPTIMIZATION = "emergency_optimization"
DISK_CLEANUP = "disk_cleanup"

# Time a site check may take beyond its own timeout before the executor gives
# up on it. The probe enforces the site's timeout itself, so this is a backstop.
SITE_CHECK_GRACE = 10.0
EMERGENCY_TIMEOUT = 120.0


def site_job(site: SiteConfig, config: Config) -> JobSpec:
    return JobSpec(site.job, SITE_CHECK, Priority.HIGH, site.interval,
                   site.timeout + SITE_CHECK_GRACE, {"site": site.name}, run_at_start=True,
                   max_retries=config.daemon.max_retries)


def scheduled_jobs(config: Config) -> list[JobSpec]:
    """Return the recurring jobs that ``config`` defines."""
    retries = config.daemon.max_retries
    specs = [site_job(site, config) for site in config.sites]
    specs.append(JobSpec(SYSTEM_HEALTH, SYSTEM_HEALTH, Priority.HIGH, config.system.interval,
                         config.system.timeout, run_at_start=True, max_retries=retries))
    specs.append(JobSpec(OPTIMIZATION, OPTIMIZATION, Priority.MEDIUM,
                         config.optimization.interval, config.optimization.timeout,
                         max_retries=retries))
    specs.append(JobSpec(PROGRESS_REPORT, PROGRESS_REPORT, Priority.LOW, config.report.interval,
                         config.report.timeout, max_retries=retries))
    return specs


def on_demand_jobs(config: Config) -> list[JobSpec]:
    """Return the jobs that run only when a threshold or an operator asks for them."""
    retries = config.daemon.max_retries
    return [
        JobSpec(EMERGENCY_OPTIMIZATION, EMERGENCY_OPTIMIZATION, Priority.CRITICAL, 0,
                EMERGENCY_TIMEOUT, max_retries=retries),
        JobSpec(DISK_CLEANUP, DISK_CLEANUP, Priority.MEDIUM, 0, config.optimization.timeout,
                max_retries=retries),
    ]


def find_job(config: Config, name: str) -> JobSpec | None:
    for spec in scheduled_jobs(config) + on_demand_jobs(config):
        if spec.name == name:
            return spec
    return None


def job_names(config: Config) -> list[str]:
    return [spec.name for spec in scheduled_jobs(config) + on_demand_jobs(config)]


def build_handlers(engine: "Engine") -> dict:
    """Map each task kind to a callable ``handler(task) -> (result, summary)``."""
    from mitod.jobs import (disk_cleanup, emergency, optimization, progress_report, site_check,
                            system_health)

    modules = {
        SITE_CHECK: site_check,
        SYSTEM_HEALTH: system_health,
        OPTIMIZATION: optimization,
        PROGRESS_REPORT: progress_report,
        EMERGENCY_OPTIMIZATION: emergency,
        DISK_CLEANUP: disk_cleanup,
    }
    return {kind: _bind(module.run, engine) for kind, module in modules.items()}


def _bind(run, engine):
    def handler(task):
        return run(engine, task)
    handler.__name__ = f"{run.__module__}.run"
    return handler
