//! What a cluster holds, for `audit`: every volume, and every entry under the brick roots.

use super::*;

/// One name under a brick root: a volume directory, or a brick image (`<name>.img`).
#[derive(Clone, Debug, PartialEq)]
pub struct RootEntry {
    pub node: String,
    pub root: PathBuf,
    /// The volume name it is for: the entry's name without `.img` (or `.img.new`).
    pub name: String,
    /// Since its last change (ctime), by the node's clock.
    pub age: Duration,
}

/// Prints the node's clock, then one `root<TAB>name<TAB>ctime` line for each entry of each root
/// given as an argument.
const LIST_ROOTS: &str =
    "date +%s && exec find \"$@\" -mindepth 1 -maxdepth 1 -printf '%H\\t%f\\t%C@\\n'";

impl SshBackend {
    /// Every volume of the cluster, with its bricks.
    pub async fn volumes(&self, cluster: &Cluster) -> Result<Vec<Volume>> {
        let out = self.gluster(cluster, words(&["volume", "info"])).await?;
        xml::parse_volume_info(&out)
    }

    /// The volume's bricks, when every one of them is `<brick root>/<volume>/brick` of a node
    /// of the cluster: what this provisioner makes; else why not.
    pub fn owned_bricks(&self, cluster: &Cluster, volume: &Volume) -> Result<Vec<Brick>> {
        self.bricks_of(cluster, volume)
    }

    /// The entries under the node's brick roots.
    pub async fn root_entries(&self, node: &Node) -> Result<Vec<RootEntry>> {
        let mut args = words(&["-c", LIST_ROOTS, "list-roots"]);
        args.extend(node.brick_roots.iter().map(|r| path_arg(&r.path)));
        let out = self.ssh.run_ok(&node.ssh_address, "sh", &args).await?;
        Ok(parse_root_entries(&node.name, &out))
    }
}

fn parse_root_entries(node: &str, out: &str) -> Vec<RootEntry> {
    let mut lines = out.lines();
    let now: f64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0.0);
    lines
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (root, entry, ctime) = (fields.next()?, fields.next()?, fields.next()?);
            let ctime: f64 = ctime.parse().ok()?;
            let name = entry
                .strip_suffix(".img.new")
                .or(entry.strip_suffix(".img"));
            Some(RootEntry {
                node: node.to_string(),
                root: root.into(),
                name: name.unwrap_or(entry).to_string(),
                age: Duration::from_secs_f64((now - ctime).max(0.0)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_entries_name_their_volume_and_age() {
        let out = "1000\n/b1\tvol_a\t990.5\n/b1\tvol_a.img\t400.0\n/b2\tx.img.new\t1001.0\nbad\n";
        let got = parse_root_entries("n1", out);
        let names: Vec<_> = got
            .iter()
            .map(|e| (e.root.to_str().unwrap(), e.name.as_str()))
            .collect();
        assert_eq!(names, [("/b1", "vol_a"), ("/b1", "vol_a"), ("/b2", "x")]);
        assert_eq!(got[0].age, Duration::from_millis(9500));
        assert_eq!(got[1].age, Duration::from_secs(600));
        assert_eq!(got[2].age, Duration::ZERO, "a clock behind counts as new");
    }
}
