//! `nordlys-openstack-regions sto1 osl1`: starts local OpenStack regions
//! (Keystone and Neutron on loopback, as the tests do) for `scripts/demo
//! --openstack`, prints one line per region and a ready line, and serves
//! until killed; the regions' servers exit with it.
//!
//! ```text
//! nordlys-openstack region=sto1 clouds=/tmp/.../clouds.yaml auth_url=http://127.0.0.1:41234/v3
//! nordlys-openstack ready
//! ```

use std::io::Write;
use std::process::ExitCode;

use nordlys_tests::openstack::{self, OpenStackRegion};

fn main() -> ExitCode {
    let names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() || names.iter().any(|n| n.starts_with('-')) {
        eprintln!("usage: nordlys-openstack-regions REGION...  (for example sto1 osl1)");
        return ExitCode::from(2);
    }
    if !openstack::installed() {
        eprintln!(
            "Keystone/Neutron are not installed: apt-get install python3-keystone python3-neutron python3-openstackclient"
        );
        return ExitCode::FAILURE;
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let regions = OpenStackRegion::start_all(&refs);
    let mut out = std::io::stdout().lock();
    for region in &regions {
        let _ = writeln!(
            out,
            "nordlys-openstack region={} clouds={} auth_url={}",
            region.name(),
            region.clouds_file().display(),
            region.auth_url()
        );
    }
    let _ = writeln!(out, "nordlys-openstack ready");
    let _ = out.flush();
    drop(out);
    // Serve until killed; the regions' servers follow this process out.
    loop {
        std::thread::park();
    }
}
