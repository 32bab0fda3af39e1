//! A Rust client for the mcp-status stream through Traefik + gatepass, using tokio-tungstenite.
//! The token is offered as a subprotocol next to `jwt-auth`; the server selects only the marker.
//!
//! cargo run -p gatepass-e2e --example ws_client -- ws://127.0.0.1:8080/ws/mcp-status TOKEN [COUNT]

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: ws_client URL TOKEN [COUNT]");
        std::process::exit(2);
    };
    let count: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(0);
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("jwt-auth, {token}").parse()?,
    );
    let (mut ws, resp) = match tokio_tungstenite::connect_async(req).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            eprintln!("refused: HTTP {}", resp.status());
            std::process::exit(1);
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "connected, subprotocol={:?}",
        resp.headers().get("sec-websocket-protocol")
    );
    let mut seen = 0;
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Text(t) => {
                println!("{t}");
                seen += 1;
                if count > 0 && seen >= count {
                    break;
                }
            }
            Message::Close(frame) => {
                eprintln!("closed: {frame:?}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
