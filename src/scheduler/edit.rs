//! Config edits (ENV, WORKDIR, USER, CMD, ...) applied to an image config.

use crate::image::config::ImageConfig;
use frontend::ir::ConfigEdit;
use std::collections::BTreeMap;

/// Apply one config edit.
pub fn apply_edit(config: &mut ImageConfig, edit: &ConfigEdit) {
    let c = &mut config.config;
    match edit {
        ConfigEdit::Env(kvs) => {
            for (k, v) in kvs {
                config.set_env(k, v);
            }
        }
        ConfigEdit::Workdir(w) => {
            let new = if w.starts_with('/') {
                w.clone()
            } else {
                format!("{}/{}", c.working_dir.as_deref().unwrap_or("/").trim_end_matches('/'), w)
            };
            c.working_dir = Some(new);
        }
        ConfigEdit::User(u) => c.user = Some(u.clone()),
        // `CMD []` / `ENTRYPOINT []` unset the field (BuildKit: a nil slice).
        ConfigEdit::Cmd(v) => c.cmd = (!v.is_empty()).then(|| v.clone()),
        ConfigEdit::Entrypoint(v) => {
            c.entrypoint = (!v.is_empty()).then(|| v.clone());
            c.cmd = None;
        }
        ConfigEdit::Label(kvs) => {
            let l = c.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in kvs {
                l.insert(k.clone(), v.clone());
            }
        }
        ConfigEdit::Expose(ports) => {
            let p = c.exposed_ports.get_or_insert_with(BTreeMap::new);
            for port in ports {
                let port = if port.contains('/') { port.clone() } else { format!("{port}/tcp") };
                p.insert(port, serde_json::json!({}));
            }
        }
        ConfigEdit::Volume(vs) => {
            let p = c.volumes.get_or_insert_with(BTreeMap::new);
            for v in vs {
                p.insert(v.clone(), serde_json::json!({}));
            }
        }
        ConfigEdit::Shell(v) => c.shell = Some(v.clone()),
        ConfigEdit::StopSignal(s) => c.stop_signal = Some(s.clone()),
        ConfigEdit::Onbuild(s) => c.on_build.get_or_insert_with(Vec::new).push(s.clone()),
        ConfigEdit::ClearOnbuild => c.on_build = None,
        ConfigEdit::Maintainer(m) => config.author = Some(m.clone()),
        ConfigEdit::Healthcheck(h) => {
            // Docker's HealthConfig: durations in ns, zero values omitted.
            let mut v = serde_json::Map::new();
            v.insert("Test".into(), serde_json::json!(h.test));
            for (k, n) in [
                ("Interval", h.interval),
                ("Timeout", h.timeout),
                ("StartPeriod", h.start_period),
                ("StartInterval", h.start_interval),
                ("Retries", h.retries),
            ] {
                if n != 0 {
                    v.insert(k.into(), serde_json::json!(n));
                }
            }
            c.healthcheck = Some(serde_json::Value::Object(v));
        }
        ConfigEdit::Nothing => {}
    }
}

