//! The Hetzner Cloud API's request and response bodies, as far as the provider reads them.
//!
//! Shapes follow the API documentation's examples (kept as fixtures in
//! `fleet-providers/tests/fixtures/hetzner/`). Fields the provider does not use are left
//! out; serde ignores them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /servers`.
#[derive(Serialize)]
pub struct CreateServerRequest<'a> {
    /// Server name (also its hostname); unique per project.
    pub name: &'a str,
    /// Server type name (`cx22`).
    pub server_type: &'a str,
    /// Image name or id.
    pub image: &'a str,
    /// Location name (`fsn1`); Hetzner picks one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<&'a str>,
    /// SSH key names or ids.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub ssh_keys: &'a [String],
    /// Labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Cloud-init user data; the caller exposes the secret only here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<&'a str>,
    /// Start the server once created.
    pub start_after_create: bool,
}

/// Answer of `POST /servers`.
#[derive(Debug, Deserialize)]
pub struct CreateServerResponse {
    /// The server, as created.
    pub server: Server,
    /// The `create_server` action.
    pub action: Action,
    /// Actions that follow (`start_server`).
    #[serde(default)]
    pub next_actions: Vec<Action>,
}

/// Answer of `GET /servers`.
#[derive(Debug, Deserialize)]
pub struct ListServersResponse {
    /// One page of servers.
    pub servers: Vec<Server>,
    /// Pagination.
    #[serde(default)]
    pub meta: Option<Meta>,
}

/// Answer of `GET /servers/{id}`.
#[derive(Debug, Deserialize)]
pub struct ServerResponse {
    /// The server.
    pub server: Server,
}

/// Answer of `DELETE /servers/{id}` and `GET /actions/{id}`.
#[derive(Debug, Deserialize)]
pub struct ActionResponse {
    /// The action.
    pub action: Action,
}

/// A server.
#[derive(Debug, Clone, Deserialize)]
pub struct Server {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `initializing`, `starting`, `running`, `stopping`, `off`, `deleting`, `migrating`,
    /// `rebuilding` or `unknown`.
    pub status: String,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// Public addresses.
    #[serde(default)]
    pub public_net: Option<PublicNet>,
    /// Private networks.
    #[serde(default)]
    pub private_net: Vec<PrivateNet>,
    /// Server type.
    pub server_type: ServerType,
    /// Image it was created from; `null` when that image was deleted.
    #[serde(default)]
    pub image: Option<Image>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `public_net`.
#[derive(Debug, Clone, Deserialize)]
pub struct PublicNet {
    /// Primary IPv4, if any.
    #[serde(default)]
    pub ipv4: Option<IpAddress>,
    /// Primary IPv6 network, if any.
    #[serde(default)]
    pub ipv6: Option<IpAddress>,
}

/// An address in `public_net`.
#[derive(Debug, Clone, Deserialize)]
pub struct IpAddress {
    /// The address (IPv4) or network (IPv6, `2001:db8::/64`).
    pub ip: String,
}

/// One `private_net` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct PrivateNet {
    /// Address in that network.
    pub ip: String,
}

/// `server_type`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerType {
    /// Name (`cx22`).
    pub name: String,
}

/// `image`.
#[derive(Debug, Clone, Deserialize)]
pub struct Image {
    /// Id.
    pub id: u64,
    /// Name of system and app images; `null` for snapshots.
    #[serde(default)]
    pub name: Option<String>,
}

/// An action: an asynchronous task such as creating or deleting a server.
#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    /// Id.
    pub id: u64,
    /// What it does (`create_server`).
    pub command: String,
    /// `running`, `success` or `error`.
    pub status: String,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<ApiError>,
}

/// `meta`.
#[derive(Debug, Deserialize)]
pub struct Meta {
    /// Pagination of a list.
    pub pagination: Pagination,
}

/// `meta.pagination`.
#[derive(Debug, Deserialize)]
pub struct Pagination {
    /// This page.
    pub page: u32,
    /// Entries per page.
    pub per_page: u32,
    /// The next page, if any.
    #[serde(default)]
    pub next_page: Option<u32>,
    /// The last page.
    #[serde(default)]
    pub last_page: Option<u32>,
    /// Entries on all pages.
    #[serde(default)]
    pub total_entries: Option<u64>,
}

/// An error body: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ApiError,
}

/// An error's code and message (also an action's `error`).
#[derive(Debug, Clone, Deserialize)]
pub struct ApiError {
    /// Machine-readable code (`uniqueness_error`).
    pub code: String,
    /// Human-readable message.
    pub message: String,
}
