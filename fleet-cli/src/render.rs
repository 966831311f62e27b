//! `render` and `inventory`: print what an instance boots with, and the Ansible inventory
//! of the live fleet. Both only read: no lock, no cloud call.

use anyhow::{bail, Context as _, Result};

use fleet_core::naming;
use fleet_core::render::{Renderer, Secrets};
use fleet_core::stack::{LoadedStack, Override};
use fleet_core::state::State;

use crate::Global;

fn load_stack(g: &Global) -> Result<LoadedStack> {
    let overrides = g
        .set
        .iter()
        .map(|s| Override::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let env = |k: &str| std::env::var(k).ok();
    Ok(fleet_providers::load_stack(&g.stack, &overrides, &env)?)
}

/// The recorded state, or an empty one when there is none yet.
async fn read_state(loaded: &LoadedStack) -> Result<State> {
    let calls = fleet_providers::aws::CallCounter::default();
    let backend = fleet_providers::backend_for(loaded, &calls).await?;
    let name = &loaded.stack.name;
    match backend.read().await.context("could not read state")? {
        Some(s) if &s.stack != name => bail!(
            "state at {} belongs to stack `{}`, not `{name}`; point `state.path` at this stack's own file",
            backend.location(),
            s.stack
        ),
        Some(s) => Ok(s),
        None => Ok(State::new(name.clone(), String::new())),
    }
}

/// `render`: the user data `instance` (default: the next instance to be created) boots with.
pub async fn render(g: &Global, instance: Option<&str>, show_secrets: bool) -> Result<u8> {
    let loaded = load_stack(g)?;
    let renderer = Renderer::from_stack(&loaded)?;
    if !renderer.has_user_data() {
        bail!(
            "stack {} names no `templates.user_data`; set it (the example stacks use instance/cloudinit.yml.j2)",
            loaded.path.display()
        );
    }
    let name = match instance {
        Some(n) => {
            if let Some(problem) = naming::label_problem(n) {
                bail!("instance name `{n}` {problem}");
            }
            n.to_string()
        }
        None => {
            let state = read_state(&loaded).await?;
            naming::instance_name(&loaded.stack.name, state.next_index)
        }
    };
    let secrets = if show_secrets {
        Secrets::Shown
    } else {
        Secrets::Masked
    };
    let text = renderer
        .user_data(&name, secrets)?
        .expect("the stack names a user data template");
    print!("{text}");
    Ok(0)
}

/// `inventory`: the Ansible inventory of the instances recorded in state.
pub async fn inventory(g: &Global) -> Result<u8> {
    let loaded = load_stack(g)?;
    let renderer = Renderer::from_stack(&loaded)?;
    let state = read_state(&loaded).await?;
    print!("{}", renderer.inventory(&state)?);
    Ok(0)
}
