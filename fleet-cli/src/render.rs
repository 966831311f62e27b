//! `render` and `inventory`: print what an instance boots with, and the Ansible inventory
//! of the live fleet. Both only read: no lock, no cloud call.

use anyhow::{bail, Result};

use fleet_core::naming;
use fleet_core::render::{Renderer, Secrets};

use crate::context::ReadOnly;
use crate::Global;

/// `render`: the user data `instance` (default: the next instance to be created) boots with.
pub async fn render(g: &Global, instance: Option<&str>, show_secrets: bool) -> Result<u8> {
    let ro = ReadOnly::load(g).await?;
    let loaded = &ro.loaded;
    let renderer = Renderer::from_stack(loaded);
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
            let state = ro.state().await?;
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
    let ro = ReadOnly::load(g).await?;
    let renderer = Renderer::from_stack(&ro.loaded);
    let state = ro.state().await?;
    print!("{}", renderer.inventory(&state)?);
    Ok(0)
}
