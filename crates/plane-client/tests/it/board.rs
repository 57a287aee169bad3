//! A board look asks only for what a runner reads: `fields=` without
//! `expand`, states as bare ids to resolve from the state list.

use plane_client::*;
use plane_sim::{PlaneSim, SimConfig};

use crate::support::*;

#[tokio::test]
async fn a_board_look_asks_for_five_fields_and_gets_bare_state_ids() {
    let sim = PlaneSim::start(SimConfig::default()).await.unwrap();
    let todo = sim.add_work_item("a job", "Todo");
    let mut config = quick_config(
        &sim.base_url(),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    );
    config.routes = RouteFamily::WorkItems;
    let plane = PlaneClient::new(config).unwrap();

    let items = plane.list_work_items().await.unwrap();
    let item = items.iter().find(|i| i.id == todo).unwrap();
    assert_eq!(item.name, "a job");
    let states = plane.states().await.unwrap();
    let StateRef::Id(id) = &item.state else {
        panic!("the state came expanded: {:?}", item.state);
    };
    assert_eq!(
        states.iter().find(|s| &s.id == id).map(|s| s.name.as_str()),
        Some("Todo")
    );
    let list = sim
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.path.ends_with("/work-items/"))
        .unwrap();
    let query = list.query.unwrap_or_default();
    assert!(
        query.contains("fields=id%2Cname%2Cstate%2Clabels%2Ccreated_at")
            || query.contains("fields=id,name,state,labels,created_at"),
        "{query}"
    );
    assert!(!query.contains("expand"), "{query}");
}
