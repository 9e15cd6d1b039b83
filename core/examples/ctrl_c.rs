//! Waits forever; on Ctrl-C, runs an async clean-up inside a shielded scope
//! (sleeps 100 ms), prints `cleaned up`, and exits with status 130.
//!
//! `cargo run -p trio --example ctrl_c`, then press Ctrl-C.

use std::time::Duration;

use trio::{CancelScope, Error, sleep, sleep_forever};

fn main() {
    let result = trio::run(async {
        println!("waiting for Ctrl-C");
        let waited = sleep_forever().await;
        // Cancelled by Ctrl-C: clean up, shielded so the clean-up can await.
        CancelScope::shielded()
            .run(async {
                sleep(Duration::from_millis(100)).await?;
                println!("cleaned up");
                Ok(())
            })
            .await?;
        waited.map(|_| ())
    });
    match result {
        Err(Error::KeyboardInterrupt) => std::process::exit(130),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        Ok(()) => {}
    }
}
