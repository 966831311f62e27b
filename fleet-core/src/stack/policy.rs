//! The `policy:` section of the stack: the settings as declared ([`PolicyConfig`], with its
//! billing and `periods`), checked and compiled once when the stack loads ([`Settings`],
//! cron schedules parsed), and the settings in force at one moment ([`Effective`]).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};

use super::{duration_serde, opt_duration_serde};

/// `policy:`: how many VMs the fleet keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Never fewer VMs than this.
    #[serde(default)]
    pub min_instances: u32,
    /// Never more VMs than this.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Jobs one VM runs at once (the runner's `concurrent`).
    #[serde(default = "default_one")]
    pub capacity_per_instance: u32,
    /// Spare job slots kept running (GitLab's `idle_count`, counted in slots).
    #[serde(default)]
    pub idle_count: u32,
    /// How long a VM stays running idle before it is stopped or retired.
    #[serde(default = "default_idle_time", with = "duration_serde")]
    pub idle_time: Duration,
    /// Spare slots as a factor of slots in use, when more than `idle_count` (0: off).
    #[serde(default)]
    pub scale_factor: f64,
    /// Cap on what `scale_factor` asks for (0: no cap).
    #[serde(default)]
    pub scale_factor_limit: u32,
    /// VMs being created or started at once (0: no limit).
    #[serde(default)]
    pub max_growth_rate: u32,
    /// Jobs after which a VM is retired (0: no limit).
    #[serde(default)]
    pub max_use_count: u32,
    /// Stopped, already provisioned VMs kept at least, resumed on demand.
    #[serde(default)]
    pub stopped_count: u32,
    /// Stopped VMs kept at most; 0 never stops VMs (clouds that bill stopped VMs).
    /// Defaults to `max_instances`.
    #[serde(default)]
    pub stopped_max: Option<u32>,
    /// How long a stopped VM above `stopped_count` is kept after its last job.
    #[serde(default = "default_stopped_time", with = "duration_serde")]
    pub stopped_time: Duration,
    /// Keep enough stopped VMs for the highest demand seen in this hour and the next in the
    /// same hours of the last four weeks (see docs/policy.md).
    #[serde(default)]
    pub forecast: bool,
    /// Expected time from create to ready, until measured (see docs/policy.md).
    #[serde(default = "default_boot_time", with = "duration_serde")]
    pub boot_time: Duration,
    /// Expected time from start to ready, until measured.
    #[serde(default = "default_resume_time", with = "duration_serde")]
    pub resume_time: Duration,
    /// How the cloud bills running VMs.
    #[serde(default)]
    pub billing: BillingConfig,
    /// Settings that override these on a schedule; the last matching entry wins.
    #[serde(default)]
    pub periods: Vec<PeriodConfig>,
    /// The wait target; when set, the pool is learned from demand (docs/policy.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// What capacity costs per VM-hour.
    #[serde(default)]
    pub prices: PricesConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            min_instances: 0,
            max_instances: default_max_instances(),
            capacity_per_instance: 1,
            idle_count: 0,
            idle_time: default_idle_time(),
            scale_factor: 0.0,
            scale_factor_limit: 0,
            max_growth_rate: 0,
            max_use_count: 0,
            stopped_count: 0,
            stopped_max: None,
            stopped_time: default_stopped_time(),
            forecast: false,
            boot_time: default_boot_time(),
            resume_time: default_resume_time(),
            billing: BillingConfig::default(),
            periods: Vec::new(),
            target: None,
            prices: PricesConfig::default(),
        }
    }
}

/// The wait target (`policy.target`): `percentile` % of jobs wait at most `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The wait.
    #[serde(with = "duration_serde")]
    pub wait: Duration,
    /// The share of jobs, in percent (50 to 99.9).
    #[serde(default = "default_percentile")]
    pub percentile: f64,
}

fn default_percentile() -> f64 {
    95.0
}

/// What capacity costs per VM-hour as the stack states it (`policy.prices`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricesConfig {
    /// A running VM (any unit; only ratios matter to the policy).
    #[serde(default = "default_running_price")]
    pub running: f64,
    /// A stopped VM. Default: [`STOPPED_SHARE`] of `running` (an EC2 instance stopped
    /// costs its volume only); on clouds that bill stopped VMs (Hetzner) the provider sets
    /// it to `running`, and a stopped pool then saves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<f64>,
}

/// A stopped VM's price as a share of a running one's by default: a small EC2 instance's
/// gp3 volume against its hourly price.
pub const STOPPED_SHARE: f64 = 0.035;

fn default_running_price() -> f64 {
    1.0
}

impl Default for PricesConfig {
    fn default() -> Self {
        PricesConfig {
            running: default_running_price(),
            stopped: None,
        }
    }
}

impl PricesConfig {
    /// The prices with the default filled in.
    pub fn resolve(&self) -> Prices {
        Prices {
            running: self.running,
            stopped: self.stopped.unwrap_or(self.running * STOPPED_SHARE),
        }
    }
}

/// What capacity costs per VM-hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// A running VM.
    pub running: f64,
    /// A stopped VM (its disk); equal to `running` where stopped VMs are billed.
    pub stopped: f64,
}

/// What the pool level in force was learned from (for the plan's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnedPool {
    /// The level, in job slots.
    pub level: u32,
    /// The largest demand in the record, in jobs.
    pub largest: u32,
    /// Days of demand the record covers.
    pub days: u32,
}

/// How the cloud bills a running VM (`policy.billing`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// `second` (billed per second with a minimum per start) or `hour` (each started hour).
    #[serde(default)]
    pub per: BillingUnit,
    /// For per-second billing: the least a start is billed.
    #[serde(default = "default_billing_minimum", with = "duration_serde")]
    pub minimum: Duration,
    /// For hourly billing: retire or stop an idle VM only this close to its next paid hour.
    #[serde(default = "default_billing_margin", with = "duration_serde")]
    pub margin: Duration,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            per: BillingUnit::Second,
            minimum: default_billing_minimum(),
            margin: default_billing_margin(),
        }
    }
}

/// The unit a cloud bills running VMs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingUnit {
    /// Per second, with `minimum` per start (AWS, GCP, Azure).
    #[default]
    Second,
    /// Per started hour (Hetzner and older clouds).
    Hour,
}

/// One `policy.periods[]` entry: settings that override the defaults while a cron schedule
/// matches. The last matching entry wins, as in GitLab's autoscalers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodConfig {
    /// Cron expressions (`minute hour day-of-month month day-of-week`); the entry applies in
    /// every minute one of them matches.
    pub schedule: Vec<String>,
    /// IANA time zone the schedule is read in (`Europe/Berlin`); UTC when absent.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Overrides `policy.min_instances`.
    #[serde(default)]
    pub min_instances: Option<u32>,
    /// Overrides `policy.idle_count`.
    #[serde(default)]
    pub idle_count: Option<u32>,
    /// Overrides `policy.idle_time`.
    #[serde(default, with = "opt_duration_serde")]
    pub idle_time: Option<Duration>,
    /// Overrides `policy.scale_factor`.
    #[serde(default)]
    pub scale_factor: Option<f64>,
    /// Overrides `policy.scale_factor_limit`.
    #[serde(default)]
    pub scale_factor_limit: Option<u32>,
    /// Overrides `policy.stopped_count`.
    #[serde(default)]
    pub stopped_count: Option<u32>,
    /// Overrides `policy.stopped_time`.
    #[serde(default, with = "opt_duration_serde")]
    pub stopped_time: Option<Duration>,
}

fn default_one() -> u32 {
    1
}
fn default_max_instances() -> u32 {
    10
}
fn default_idle_time() -> Duration {
    Duration::from_secs(60)
}
fn default_stopped_time() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_boot_time() -> Duration {
    Duration::from_secs(90)
}
fn default_resume_time() -> Duration {
    Duration::from_secs(30)
}
fn default_billing_minimum() -> Duration {
    Duration::from_secs(60)
}
fn default_billing_margin() -> Duration {
    Duration::from_secs(180)
}
fn default_timezone() -> String {
    "UTC".into()
}

/// A problem with the policy settings; the stack loader turns it into a located error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsProblem {
    /// Dotted path of the offending key (`policy.periods[0].schedule[1]`).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: String,
}

/// A compiled `periods[]` entry.
#[derive(Debug, Clone)]
struct Period {
    crons: Vec<croner::Cron>,
    tz: chrono_tz::Tz,
    config: PeriodConfig,
}

/// The settings in force at one moment: `policy:` with the matching `periods` applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// Never fewer running VMs than this.
    pub min_instances: u32,
    /// Never more VMs (running or stopped) than this.
    pub max_instances: u32,
    /// Job slots per VM.
    pub capacity_per_instance: u32,
    /// Spare job slots kept running.
    pub idle_count: u32,
    /// How long a VM stays running idle before it is stopped or retired.
    pub idle_time: Duration,
    /// Spare slots as a factor of slots in use (0: off).
    pub scale_factor: f64,
    /// Cap on the spare slots `scale_factor` asks for (0: no cap).
    pub scale_factor_limit: u32,
    /// VMs created or started at once (0: no limit).
    pub max_growth_rate: u32,
    /// Jobs after which a VM is retired (0: no limit).
    pub max_use_count: u32,
    /// Stopped VMs kept at least (pre-provisioned when short).
    pub stopped_count: u32,
    /// Stopped VMs kept at most (0: never stop VMs, for clouds that bill stopped VMs).
    pub stopped_max: u32,
    /// How long a stopped VM above `stopped_count` is kept after its last job.
    pub stopped_time: Duration,
    /// Whether the stopped pool follows the forecast (`expected_peak`).
    pub forecast: bool,
    /// Demand (job slots) expected this hour or the next from the recent weeks, when
    /// `forecast` is on (see [`Effective::with_forecast`]); 0 otherwise.
    pub expected_peak: u32,
    /// Expected time from create to ready.
    pub boot_time: Duration,
    /// Expected time from start to ready.
    pub resume_time: Duration,
    /// How the cloud bills.
    pub billing: BillingConfig,
    /// Index of the `periods[]` entry in force, if any.
    pub period: Option<usize>,
    /// The wait target the pool is learned for (`policy.target`), if set.
    pub target: Option<Target>,
    /// What capacity costs.
    pub prices: Prices,
    /// What the pool was learned from, when `target` set the pool (`autoscale::tune`).
    pub learned: Option<LearnedPool>,
}

/// The policy settings, checked and with their schedules compiled.
#[derive(Debug, Clone)]
pub struct Settings {
    base: Effective,
    periods: Vec<Period>,
}

impl Default for Settings {
    /// The settings of an empty `policy:` section.
    fn default() -> Settings {
        Settings::from_config(&PolicyConfig::default())
            .expect("the default policy settings are consistent")
    }
}

impl Settings {
    /// The same settings without a stopped pool, for a cloud that cannot stop VMs (or
    /// bills stopped ones): running spares only.
    pub fn without_stopped_pool(&self) -> Settings {
        let mut s = self.clone();
        s.base.stopped_count = 0;
        s.base.stopped_max = 0;
        for p in &mut s.periods {
            p.config.stopped_count = None;
        }
        s
    }

    /// Checks and compiles the stack's `policy:` section.
    pub fn from_config(c: &PolicyConfig) -> Result<Settings, SettingsProblem> {
        let problem = |path: String, message: String, hint: &str| SettingsProblem {
            path,
            message,
            hint: hint.into(),
        };
        let factor_ok = |f: f64| f.is_finite() && f >= 0.0;
        if !factor_ok(c.scale_factor) {
            return Err(problem(
                "policy.scale_factor".into(),
                format!(
                    "scale_factor {} is not a number of 0 or more",
                    c.scale_factor
                ),
                "use 0 to turn it off, or a factor like 0.5",
            ));
        }
        let stopped_max = c.stopped_max.unwrap_or(c.max_instances);
        if c.stopped_count > stopped_max {
            return Err(problem(
                "policy.stopped_count".into(),
                format!(
                    "stopped_count ({}) is greater than stopped_max ({stopped_max})",
                    c.stopped_count
                ),
                "lower stopped_count or raise stopped_max (it defaults to max_instances)",
            ));
        }
        if stopped_max > c.max_instances {
            return Err(problem(
                "policy.stopped_max".into(),
                format!(
                    "stopped_max ({stopped_max}) is greater than max_instances ({})",
                    c.max_instances
                ),
                "stopped VMs count towards max_instances",
            ));
        }
        if c.billing.per == BillingUnit::Hour && c.billing.margin >= Duration::from_secs(3600) {
            return Err(problem(
                "policy.billing.margin".into(),
                "billing.margin is an hour or more".into(),
                "use a few minutes, like 3m",
            ));
        }
        if let Some(t) = c.target {
            if t.wait.is_zero() {
                return Err(problem(
                    "policy.target.wait".into(),
                    "target wait is zero".into(),
                    "state the wait you accept, like 60s",
                ));
            }
            if !(t.percentile.is_finite() && (50.0..=99.9).contains(&t.percentile)) {
                return Err(problem(
                    "policy.target.percentile".into(),
                    format!("percentile {} is not between 50 and 99.9", t.percentile),
                    "use 95 for the 95th percentile",
                ));
            }
        }
        let price_ok = |p: f64| p.is_finite() && p >= 0.0;
        if !(price_ok(c.prices.running) && c.prices.running > 0.0) {
            return Err(problem(
                "policy.prices.running".into(),
                format!("running price {} is not a number above 0", c.prices.running),
                "give the price of a running VM-hour, like 0.0104",
            ));
        }
        if let Some(p) = c.prices.stopped.filter(|&p| !price_ok(p)) {
            return Err(problem(
                "policy.prices.stopped".into(),
                format!("stopped price {p} is not a number of 0 or more"),
                "give the price of a stopped VM-hour (its disk), or leave it out",
            ));
        }
        let mut periods = Vec::with_capacity(c.periods.len());
        for (i, p) in c.periods.iter().enumerate() {
            if p.schedule.is_empty() {
                return Err(problem(
                    format!("policy.periods[{i}].schedule"),
                    "period has no schedule".into(),
                    "list at least one cron expression, like \"* 8-18 * * mon-fri\"",
                ));
            }
            let mut crons = Vec::with_capacity(p.schedule.len());
            for (j, text) in p.schedule.iter().enumerate() {
                let cron = croner::Cron::from_str(text).map_err(|e| {
                    problem(
                        format!("policy.periods[{i}].schedule[{j}]"),
                        format!("`{text}` is not a cron expression ({e})"),
                        "write minute hour day-of-month month day-of-week, like \"* 8-18 * * mon-fri\"",
                    )
                })?;
                crons.push(cron);
            }
            let tz = chrono_tz::Tz::from_str(&p.timezone).map_err(|_| {
                problem(
                    format!("policy.periods[{i}].timezone"),
                    format!("`{}` is not a known time zone", p.timezone),
                    "use an IANA name like `UTC` or `Europe/Berlin`",
                )
            })?;
            if let Some(f) = p.scale_factor {
                if !factor_ok(f) {
                    return Err(problem(
                        format!("policy.periods[{i}].scale_factor"),
                        format!("scale_factor {f} is not a number of 0 or more"),
                        "use 0 to turn it off, or a factor like 0.5",
                    ));
                }
            }
            if p.min_instances.unwrap_or(0) > c.max_instances {
                return Err(problem(
                    format!("policy.periods[{i}].min_instances"),
                    "period min_instances is greater than policy.max_instances".into(),
                    "lower it or raise max_instances",
                ));
            }
            if p.stopped_count.unwrap_or(0) > stopped_max {
                return Err(problem(
                    format!("policy.periods[{i}].stopped_count"),
                    format!("period stopped_count is greater than stopped_max ({stopped_max})"),
                    "lower it or raise stopped_max",
                ));
            }
            periods.push(Period {
                crons,
                tz,
                config: p.clone(),
            });
        }
        Ok(Settings {
            base: Effective {
                min_instances: c.min_instances,
                max_instances: c.max_instances,
                capacity_per_instance: c.capacity_per_instance.max(1),
                idle_count: c.idle_count,
                idle_time: c.idle_time,
                scale_factor: c.scale_factor,
                scale_factor_limit: c.scale_factor_limit,
                max_growth_rate: c.max_growth_rate,
                max_use_count: c.max_use_count,
                stopped_count: c.stopped_count,
                stopped_max,
                stopped_time: c.stopped_time,
                forecast: c.forecast,
                expected_peak: 0,
                boot_time: c.boot_time,
                resume_time: c.resume_time,
                billing: c.billing,
                period: None,
                target: c.target,
                prices: c.prices.resolve(),
                learned: None,
            },
            periods,
        })
    }

    /// The settings without any period applied.
    pub fn base(&self) -> &Effective {
        &self.base
    }

    /// Whether any `periods` are declared (callers may cache [`Settings::at`] per minute).
    pub fn has_periods(&self) -> bool {
        !self.periods.is_empty()
    }

    /// The settings in force at `now`: the last period whose schedule matches the minute of
    /// `now` in its time zone overrides the base settings.
    pub fn at(&self, now: DateTime<Utc>) -> Effective {
        let minute = now
            .duration_trunc(chrono::TimeDelta::minutes(1))
            .unwrap_or(now);
        let hit = self.periods.iter().enumerate().rev().find(|(_, p)| {
            let local = minute.with_timezone(&p.tz);
            p.crons
                .iter()
                .any(|c| c.is_time_matching(&local).unwrap_or(false))
        });
        let mut e = self.base.clone();
        if let Some((i, p)) = hit {
            let o = &p.config;
            e.period = Some(i);
            if let Some(v) = o.min_instances {
                e.min_instances = v;
            }
            if let Some(v) = o.idle_count {
                e.idle_count = v;
            }
            if let Some(v) = o.idle_time {
                e.idle_time = v;
            }
            if let Some(v) = o.scale_factor {
                e.scale_factor = v;
            }
            if let Some(v) = o.scale_factor_limit {
                e.scale_factor_limit = v;
            }
            if let Some(v) = o.stopped_count {
                e.stopped_count = v;
            }
            if let Some(v) = o.stopped_time {
                e.stopped_time = v;
            }
        }
        e
    }
}

impl Effective {
    /// Spare job slots to keep running for `in_use` busy slots: `idle_count`, or
    /// `scale_factor` x in-use capped by `scale_factor_limit` when that is more.
    pub fn idle_slots(&self, in_use: u32) -> u32 {
        let mut by_factor = (self.scale_factor * f64::from(in_use)).ceil() as u32;
        if self.scale_factor_limit > 0 {
            by_factor = by_factor.min(self.scale_factor_limit);
        }
        self.idle_count.max(by_factor)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn config_with(periods: Vec<PeriodConfig>) -> PolicyConfig {
        PolicyConfig {
            idle_count: 1,
            periods,
            ..PolicyConfig::default()
        }
    }

    fn period(schedule: &str, tz: &str, idle_count: u32) -> PeriodConfig {
        PeriodConfig {
            schedule: vec![schedule.into()],
            timezone: tz.into(),
            min_instances: None,
            idle_count: Some(idle_count),
            idle_time: None,
            scale_factor: None,
            scale_factor_limit: None,
            stopped_count: None,
            stopped_time: None,
        }
    }

    #[test]
    fn periods_override_by_schedule_in_their_time_zone() {
        // Working hours in Berlin: 8:00-17:59 Monday to Friday.
        let s = Settings::from_config(&config_with(vec![period(
            "* 8-17 * * mon-fri",
            "Europe/Berlin",
            5,
        )]))
        .unwrap();
        // Wednesday 2019-10-02 06:30 UTC is 08:30 in Berlin (CEST, UTC+2): in the period.
        let wed = Utc.with_ymd_and_hms(2019, 10, 2, 6, 30, 17).unwrap();
        assert_eq!(s.at(wed).idle_count, 5);
        assert_eq!(s.at(wed).period, Some(0));
        // 05:30 UTC is 07:30 in Berlin: outside, although 8-17 would match in UTC terms... not
        // here, but 16:30 UTC (18:30 Berlin) would match in UTC and must not in Berlin.
        let early = Utc.with_ymd_and_hms(2019, 10, 2, 5, 30, 0).unwrap();
        assert_eq!(s.at(early).idle_count, 1);
        let evening = Utc.with_ymd_and_hms(2019, 10, 2, 16, 30, 0).unwrap();
        assert_eq!(s.at(evening).idle_count, 1);
        // Saturday: outside.
        let sat = Utc.with_ymd_and_hms(2019, 10, 5, 9, 0, 0).unwrap();
        assert_eq!(s.at(sat).idle_count, 1);
    }

    #[test]
    fn the_last_matching_period_wins() {
        let s = Settings::from_config(&config_with(vec![
            period("* * * * *", "UTC", 2),
            period("* * * * sat,sun", "UTC", 0),
        ]))
        .unwrap();
        let fri = Utc.with_ymd_and_hms(2019, 10, 4, 12, 0, 0).unwrap();
        let sun = Utc.with_ymd_and_hms(2019, 10, 6, 12, 0, 0).unwrap();
        assert_eq!(s.at(fri).idle_count, 2);
        assert_eq!(s.at(sun).idle_count, 0);
        assert_eq!(s.at(sun).period, Some(1));
    }

    #[test]
    fn bad_cron_and_zone_are_located() {
        let e = Settings::from_config(&config_with(vec![period("* * * *", "UTC", 1)])).unwrap_err();
        assert_eq!(e.path, "policy.periods[0].schedule[0]");
        let e = Settings::from_config(&config_with(vec![period("* * * * *", "Mars/Olympus", 1)]))
            .unwrap_err();
        assert_eq!(e.path, "policy.periods[0].timezone");
    }

    #[test]
    fn idle_slots_follow_gitlab_meaning() {
        let mut e = Settings::from_config(&PolicyConfig::default())
            .unwrap()
            .base()
            .clone();
        e.idle_count = 2;
        e.scale_factor = 0.5;
        assert_eq!(e.idle_slots(0), 2);
        assert_eq!(e.idle_slots(10), 5);
        e.scale_factor_limit = 3;
        assert_eq!(e.idle_slots(10), 3);
    }
}
